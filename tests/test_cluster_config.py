"""cluster.yaml passes Ray's own cluster-launcher schema (no cloud calls)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert "GPU" not in types[config["head_node_type"]]["resources"]
    assert any(t["resources"].get("GPU", 0) >= 1 and t.get("max_workers", 0) > t.get("min_workers", 0)
               for t in types.values())
    assert any("pip install" in c and "paric" in c for c in config["setup_commands"])


def test_schema_rejects_a_broken_config():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    config["available_node_types"]["head"]["resources"] = "eight"
    with pytest.raises(Exception):
        validate_config(prepare_config(config))
