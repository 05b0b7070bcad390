"""The family table is complete: every family in `videovae.models.FAMILIES` has its model file,
its one test file with a `FamilyTests` subclass (tiny config, applicability), and the convert
side's table agrees. Adding a family without one of them fails here, naming what is missing."""

import inspect

import pytest

from videovae.convert import INFLATERS
from videovae.models import DEFAULT_ARCH, FAMILIES, StreamingAutoencoder
from videovae.models.registry import model_class_for

from family_mixin import PROPERTIES, FamilyTests
from helpers import MODEL_TESTS, family_test_class, family_test_file

TINY_PARAMETERS = 2_000_000  # a tiny test config keeps the suite fast


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_family_has_its_class_file_and_test_file(arch):
    cls = FAMILIES[arch]
    assert issubclass(cls, StreamingAutoencoder), f"{cls} is not a StreamingAutoencoder"
    assert cls.arch == arch, f"{cls.__name__}.arch is {cls.arch!r}, FAMILIES says {arch!r}"
    assert cls.__module__ == f"videovae.models.autoencoder_{arch}", (
        f"family {arch!r} lives in {cls.__module__}, not videovae/models/autoencoder_{arch}.py")
    assert family_test_file(arch).is_file(), (
        f"family {arch!r} has no test file {family_test_file(arch)} (a FamilyTests subclass)")
    tests = family_test_class(arch)  # raises, naming the file, without exactly one subclass
    assert isinstance(tests.config, dict) and tests.config, (
        f"{family_test_file(arch)}: {tests.__name__}.config must be the family's tiny config")
    assert tests.tiling_psnr_floor is not None or "tiling" in tests.not_applicable, (
        f"{family_test_file(arch)}: set tiling_psnr_floor (measured) or say why tiling does "
        "not apply")


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_family_says_which_shared_properties_apply(arch):
    tests = family_test_class(arch)
    unknown = set(tests.not_applicable) - set(PROPERTIES)
    assert not unknown, f"{tests.__name__}.not_applicable names unknown properties {unknown}"
    empty = [p for p, why in tests.not_applicable.items() if not str(why).strip()]
    assert not empty, f"{tests.__name__}: give a skip reason for {empty}"
    # inflation applies exactly to the families the convert side can inflate
    assert (arch in INFLATERS) == ("inflation" not in tests.not_applicable), (
        f"family {arch!r}: videovae.convert.INFLATERS {'has' if arch in INFLATERS else 'lacks'}"
        f" it, but {tests.__name__}.not_applicable "
        f"{'says' if 'inflation' in tests.not_applicable else 'does not say'} inflation "
        "does not apply")


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_tiny_config_is_tiny_and_saves_under_the_family_name(arch, tmp_path):
    tests = family_test_class(arch)
    vae = tests().make()
    n = sum(p.numel() for p in vae.parameters())
    assert n < TINY_PARAMETERS, f"{arch}'s tiny config has {n} parameters"
    vae.save_pretrained(tmp_path)
    assert model_class_for(tmp_path) is FAMILIES[arch]


def test_tables_agree_and_every_test_file_names_a_family():
    assert DEFAULT_ARCH in FAMILIES
    assert set(INFLATERS) <= set(FAMILIES), f"INFLATERS has {set(INFLATERS) - set(FAMILIES)}"
    files = {p.stem.removeprefix("test_autoencoder_") for p in
             MODEL_TESTS.glob("test_autoencoder_*.py")}
    assert files == set(FAMILIES), f"test files {sorted(files)} vs FAMILIES {sorted(FAMILIES)}"
    names = [n for cls in FAMILIES.values() for n in (cls.__name__, *cls.class_aliases)]
    assert len(names) == len(set(names)), f"a class name is used twice: {names}"


def test_mixin_tests_each_check_one_named_property():
    shared = [name for name, fn in inspect.getmembers(FamilyTests, inspect.isfunction)
              if name.startswith("test_")]
    untagged = [n for n in shared if n != "test_shapes_and_ratios"
                and not hasattr(getattr(FamilyTests, n), "family_property")]
    assert not untagged, f"tag these shared tests with @family_property: {untagged}"
    used = {getattr(FamilyTests, n).family_property for n in shared if n not in untagged
            and hasattr(getattr(FamilyTests, n), "family_property")}
    assert used == set(PROPERTIES), f"properties without a test: {set(PROPERTIES) - used}"
