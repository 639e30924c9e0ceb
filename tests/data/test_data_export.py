"""Export: a generated source -> folder layout -> folder source gives back the same data."""

from __future__ import annotations

import numpy as np
import pytest

from smsweep.errors import SpecError
from smsweep.method.data import SyntheticSource, TexturesSource, open_source
from smsweep.method.data.export import synth_command, write_folder


@pytest.mark.parametrize("make_source", [SyntheticSource, TexturesSource])
def test_round_trip(make_source, config, tmp_path):
    generated = make_source(6, 32, 5, seed=3)
    assert write_folder(generated, tmp_path / "out", n=5) == 5
    folder = open_source(config(source="folder", path=str(tmp_path / "out"), num_classes=5), seed=0)
    assert folder.class_names == generated.class_names
    assert len(folder) == 5
    for i in range(5):
        assert folder.name(i) == generated.name(i)
        for read, made in zip(folder.load(i), generated.load(i), strict=True):
            assert np.array_equal(read, made)


def test_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SpecError, match="not an empty directory"):
        write_folder(SyntheticSource(2, 32, 3), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_synth_command(tmp_path):
    assert synth_command(tmp_path / "s", n=3, image_size=32, num_classes=4, seed=0) == 3
    assert sorted(p.name for p in (tmp_path / "s" / "masks").iterdir()) == [
        "synth_0000000.png",
        "synth_0000001.png",
        "synth_0000002.png",
    ]
    with pytest.raises(SpecError, match=r"--num-classes is 12; the synthetic source has 3\.\.8"):
        synth_command(tmp_path / "t", n=3, image_size=32, num_classes=12, seed=0)
    with pytest.raises(SpecError, match="--n is 0"):
        synth_command(tmp_path / "t", n=0, image_size=32, num_classes=4, seed=0)
    assert not (tmp_path / "t").exists()


def test_synth_command_textures_equals_the_source(config, tmp_path):
    written = synth_command(
        tmp_path / "x", n=4, image_size=32, num_classes=3, seed=7, kind="textures"
    )
    assert written == 4
    folder = open_source(config(source="folder", path=str(tmp_path / "x"), num_classes=3), seed=0)
    textures = TexturesSource(4, 32, 3, seed=7)
    assert folder.class_names == textures.class_names
    assert [folder.name(i) for i in range(4)] == [textures.name(i) for i in range(4)]
    for i in range(4):
        for read, made in zip(folder.load(i), textures.load(i), strict=True):
            assert np.array_equal(read, made)
    with pytest.raises(SpecError, match=r"--num-classes is 9; the textures source has 2\.\.8"):
        synth_command(tmp_path / "t", n=3, image_size=32, num_classes=9, seed=0, kind="textures")
    with pytest.raises(SpecError, match="--kind is 'plaid'; use one of shapes, textures"):
        synth_command(tmp_path / "t", n=3, image_size=32, num_classes=4, seed=0, kind="plaid")
    assert not (tmp_path / "t").exists()
