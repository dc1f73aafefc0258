"""The instance price catalogue: packaged data, defaults, overrides, all-at-once errors."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml

from inferpack.bench.catalog import BASES, Catalog, InstanceType
from inferpack.errors import ConfigError


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def test_packaged_catalogue_loads_without_problems(catalog: Catalog) -> None:
    assert len(catalog) >= 26
    assert all(isinstance(item, InstanceType) for item in catalog)
    keys = [(item.name, item.region) for item in catalog]
    assert len(keys) == len(set(keys))


def test_every_entry_has_date_basis_region_and_source(catalog: Catalog) -> None:
    for item in catalog:
        assert isinstance(item.price_date, dt.date), item
        assert item.basis in BASES, item
        assert item.region, item
        assert item.source, item
        assert item.price_usd_per_hour > 0, item
        assert (item.accelerator is None) == (item.accelerator_count == 0), item
        for point in item.price_history:
            assert isinstance(point.price_date, dt.date)
            assert point.price_date < item.price_date


def test_default_is_us_east_1_on_demand(catalog: Catalog) -> None:
    inf1 = catalog.get("inf1.xlarge")
    assert (inf1.region, inf1.basis, inf1.price_usd_per_hour) == ("us-east-1", "on-demand", 0.228)
    assert (inf1.vcpu, inf1.memory_gib, inf1.accelerator) == (4, 8.0, "Inferentia")


def test_region_selects_the_tokyo_seed_price(catalog: Catalog) -> None:
    tokyo = catalog.get("inf1.xlarge", "ap-northeast-1")
    assert tokyo.price_usd_per_hour == 0.308
    assert tokyo.price_date == dt.date(2021, 7, 1)


@pytest.mark.parametrize(
    ("name", "region", "price"),
    [
        ("inf1.2xlarge", "ap-northeast-1", 0.489),
        ("g4dn.xlarge", "ap-northeast-1", 0.71),
        ("p3.2xlarge", "ap-northeast-1", 4.194),
        ("c5.2xlarge", "ap-northeast-1", 0.428),
        ("eia1.medium", "ap-northeast-1", 0.220),
        ("eia1.large", "ap-northeast-1", 0.450),
        ("eia1.xlarge", "ap-northeast-1", 0.890),
        ("p2.xlarge", "ap-northeast-1", 1.542),
        ("inf1.6xlarge", "us-east-1", 1.18),
        ("inf2.xlarge", "us-east-1", 0.7582),
        ("inf2.8xlarge", "us-east-1", 1.96786),
        ("p4d.24xlarge", "us-east-1", 21.957642),
        ("p5.48xlarge", "us-east-1", 55.04),
    ],
)
def test_figures_are_copied_exactly(catalog: Catalog, name: str, region: str, price: float) -> None:
    assert catalog.get(name, region).price_usd_per_hour == price


def test_price_history_keeps_earlier_figures(catalog: Catalog) -> None:
    p4d = catalog.get("p4d.24xlarge")
    assert [p.price_usd_per_hour for p in p4d.price_history] == [32.7726]
    assert p4d.notes is not None and "not confirmed" in p4d.notes
    assert [p.price_usd_per_hour for p in catalog.get("p5.48xlarge").price_history] == [98.32]
    tokyo_p3 = catalog.get("p3.2xlarge", "ap-northeast-1")
    assert [(p.price_usd_per_hour, p.price_date.year) for p in tokyo_p3.price_history] == [
        (5.243, 2017)
    ]


def test_name_only_in_tokyo_defaults_to_tokyo(catalog: Catalog) -> None:
    eia = catalog.get("eia1.medium")
    assert eia.region == "ap-northeast-1"
    assert eia.notes is not None and "2023-04-15" in eia.notes


def test_override_replaces_a_price_and_adds_an_instance(tmp_path: Path) -> None:
    override = tmp_path / "prices.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "instances": [
                    # Partial: only the changed fields, with the new price's own date and source.
                    {
                        "name": "inf1.xlarge",
                        "region": "us-east-1",
                        "price_usd_per_hour": 0.2,
                        "price_date": "2026-12-01",
                        "source": "my negotiated rate",
                    },
                    {
                        "name": "trn1.2xlarge",
                        "region": "us-west-2",
                        "basis": "spot",
                        "price_usd_per_hour": 0.45,
                        "price_date": "2026-11-20",
                        "source": "spot history",
                        "vcpu": 8,
                        "memory_gib": 32,
                        "accelerator": "Trainium",
                        "accelerator_count": 1,
                        "accelerator_memory_gib": 32,
                    },
                ]
            }
        )
    )
    catalog = Catalog.load(override)
    inf1 = catalog.get("inf1.xlarge")
    assert (inf1.price_usd_per_hour, inf1.price_date, inf1.source) == (
        0.2,
        dt.date(2026, 12, 1),
        "my negotiated rate",
    )
    assert inf1.vcpu == 4  # kept from the packaged entry
    assert catalog.get("inf1.xlarge", "ap-northeast-1").price_usd_per_hour == 0.308
    trn1 = catalog.get("trn1.2xlarge")
    assert (trn1.region, trn1.basis, trn1.price_usd_per_hour) == ("us-west-2", "spot", 0.45)
    assert "trn1.2xlarge" in catalog.names()
    assert len(catalog) == len(Catalog.load()) + 1


def test_json_override(tmp_path: Path) -> None:
    override = tmp_path / "prices.json"
    entry = {"name": "m5.xlarge", "region": "us-east-1", "basis": "reserved"}
    override.write_text(json.dumps({"instances": [entry]}))
    assert Catalog.load(override).get("m5.xlarge").basis == "reserved"


def test_override_with_three_bad_fields_reports_all_three(tmp_path: Path) -> None:
    override = tmp_path / "bad.yaml"
    override.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "g4dn.xlarge",
                    "region": "us-east-1",
                    "price_usd_per_hour": -1,
                    "price_date": "yesterday",
                    "source": "x",
                    "vcpu": "four",
                }
            ]
        )
    )
    with pytest.raises(ConfigError) as caught:
        Catalog.load(override)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    for field in ("price_usd_per_hour", "price_date", "vcpu"):
        assert any(field in p for p in problems), (field, problems)
    assert all(str(override) in p and "g4dn.xlarge" in p for p in problems)


def test_new_price_without_date_and_source_is_refused(tmp_path: Path) -> None:
    override = tmp_path / "p.yaml"
    override.write_text("- {name: inf1.xlarge, region: us-east-1, price_usd_per_hour: 0.1}\n")
    with pytest.raises(ConfigError) as caught:
        Catalog.load(override)
    assert len(caught.value.problems) == 2
    assert "price_date" in str(caught.value) and "source" in str(caught.value)


def test_new_entry_must_be_complete_and_consistent(tmp_path: Path) -> None:
    override = tmp_path / "p.yaml"
    override.write_text(
        "instances:\n"
        "  - {name: x1.tiny, region: eu-west-1, colour: red, accelerator: null,"
        " accelerator_count: 2}\n"
        "  - {name: x1.tiny, region: eu-west-1}\n"
    )
    with pytest.raises(ConfigError) as caught:
        Catalog.load(override)
    text = str(caught.value)
    assert "unknown field 'colour'" in text
    assert "missing field 'price_usd_per_hour'" in text
    assert "does not agree with accelerator_count" in text
    assert "instances[1]" in text and "duplicate" in text


def test_unreadable_override_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Catalog.load(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot parse"):
        Catalog.load(broken)


def test_unknown_name_suggests_close_matches(catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as caught:
        catalog.get("inf1.xlarg")
    message = str(caught.value)
    assert "unknown instance type 'inf1.xlarg'" in message
    assert "inf1.xlarge" in message


def test_unknown_region_lists_priced_regions(catalog: Catalog) -> None:
    with pytest.raises(ConfigError, match=r"priced in: ap-northeast-1, us-east-1"):
        catalog.get("inf1.xlarge", "eu-west-1")


def test_names_are_sorted_and_distinct(catalog: Catalog) -> None:
    names = catalog.names()
    assert names == sorted(set(names))
    assert {"inf1.xlarge", "p2.xlarge", "eia1.medium", "m5.xlarge"} <= set(names)


def test_a_cpu_instance_needs_no_accelerator_fields(tmp_path: Path) -> None:
    override = tmp_path / "cpu.yaml"
    override.write_text(
        "instances:\n"
        "  - {name: c8g.large, region: us-east-1, basis: on-demand, price_usd_per_hour: 0.0798,\n"
        "     price_date: '2026-12-01', source: list price, vcpu: 2, memory_gib: 4}\n"
    )
    added = Catalog.load(override).get("c8g.large")
    assert added.accelerator is None
    assert added.accelerator_count == 0
    assert added.accelerator_memory_gib == 0


def test_an_accelerator_without_its_count_is_named(tmp_path: Path) -> None:
    override = tmp_path / "gpu.yaml"
    override.write_text(
        "instances:\n"
        "  - {name: g9.large, region: us-east-1, basis: on-demand, price_usd_per_hour: 1.5,\n"
        "     price_date: '2026-12-01', source: list price, vcpu: 8, memory_gib: 32,\n"
        "     accelerator: X1}\n"
    )
    with pytest.raises(ConfigError, match="accelerator 'X1' needs 'accelerator_count'"):
        Catalog.load(override)
    gpu = override.read_text().replace("accelerator: X1}", "accelerator: X1, accelerator_count: 1}")
    override.write_text(gpu)
    added = Catalog.load(override).get("g9.large")
    assert added.accelerator_count == 1 and added.accelerator_memory_gib is None
