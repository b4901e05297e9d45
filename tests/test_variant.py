"""Mitsuba variant selection: one place, overridable, with a clear message when LLVM is missing."""

from __future__ import annotations

import pytest

from rendering import variant


def test_llvm_versions_are_read_from_library_names():
    assert variant._llvm_version("/usr/lib/x86_64-linux-gnu/libLLVM-19.so") == 19
    assert variant._llvm_version("/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1") == 19
    assert variant._llvm_version("/usr/lib/llvm-15/lib/libLLVM.so") == 15


def test_environment_variable_overrides_params(monkeypatch):
    monkeypatch.setenv("DRMNET_VARIANT", "scalar_rgb")
    assert variant.resolve_variant("llvm_ad_rgb") == "scalar_rgb"
    monkeypatch.setenv("DRMNET_VARIANT", "no_such_variant")
    with pytest.raises(ValueError, match="unknown Mitsuba variant"):
        variant.resolve_variant()


def test_missing_llvm_says_what_to_install(monkeypatch):
    monkeypatch.delenv("DRMNET_VARIANT", raising=False)
    monkeypatch.setattr(variant, "find_libllvm", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install -y libllvm19"):
        variant.resolve_variant("llvm_ad_rgb")
    monkeypatch.setattr(variant, "_cuda_usable", lambda: False)
    with pytest.warns(RuntimeWarning, match="scalar_rgb"):
        assert variant.resolve_variant() == "scalar_rgb"


def test_this_machine_finds_a_usable_llvm():
    path = variant.find_libllvm()
    assert path is not None, variant.INSTALL_HINT
    assert variant._llvm_version(path) >= variant.MIN_LLVM
