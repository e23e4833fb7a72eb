import copy

import pytest

from unlearn_da.settings.config import load_config, validate_config
from unlearn_da.core.scenarios import parse_scenario
from unlearn_da.core.errors import ConfigError


@pytest.fixture
def cfg():
    return load_config()


def test_default_and_tiny_configs_are_valid():
    validate_config(load_config())
    validate_config(load_config(["tests/config/tiny.yaml"]))


def test_scenario_names():
    assert parse_scenario("random10") == ("random", 10.0)
    assert parse_scenario("random2.5") == ("random", 2.5)
    assert parse_scenario("class7") == ("class", 7)
    with pytest.raises(ConfigError, match="allowed forms"):
        parse_scenario("rand10")


def _error(cfg, path, value):
    bad = copy.deepcopy(cfg)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    return str(err.value)


def test_errors_name_file_key_value_and_allowed(cfg):
    msg = _error(cfg, ["train", "schedule"], "linear")
    # set in memory, not in a file: named as the command line (where such values come from)
    assert "command-line --config" in msg and "train.schedule" in msg and "'linear'" in msg
    assert "cosine, multistep, constant" in msg


def test_schema_has_no_keyword_lost_to_a_comma_in_a_flow_mapping():
    """In ``{enum: [...], description: a, b}`` YAML reads ``b`` as a second key with a null value: the
    description is cut short silently. Every null in the schema would be such a key."""
    import yaml

    from unlearn_da.settings.config import DEFAULT_SCHEMA

    def nulls(node, path=""):
        if isinstance(node, dict):
            for key, value in node.items():
                if value is None and not path.endswith("/properties"):
                    yield f"{path}/{key}"
                yield from nulls(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from nulls(value, f"{path}[{i}]")

    assert list(nulls(yaml.safe_load(DEFAULT_SCHEMA.read_text()))) == []
