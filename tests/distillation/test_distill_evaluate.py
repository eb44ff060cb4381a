"""distillation.evaluate: shipped prompt lists, toy evaluation set, and an end-to-end run with tiny models."""

import json

import pytest
from click.testing import CliRunner

from distillation.evaluate import handout_items, main, toy_items


def test_handout_prompt_lists_are_shipped():
    items = handout_items("sds", None)
    assert len(items) == 10 and items[0].key == "A_red_bus_driving_on_a_desert_road"
    assert items[-1].prompt == "A car on the road"


def test_pds_without_source_images_is_a_clear_error(tmp_path, tiny_sd_folder):
    res = CliRunner().invoke(main, ["--loss_type", "pds", "--model", str(tiny_sd_folder),
                                    "--save_root", str(tmp_path)])
    assert res.exit_code == 2 and "--data_dir" in res.output
    res = CliRunner().invoke(main, ["--loss_type", "pds", "--model", str(tiny_sd_folder),
                                    "--data_dir", str(tmp_path), "--save_root", str(tmp_path)])
    assert res.exit_code == 2 and "source images missing" in res.output


def test_toy_edit_set_changes_only_the_object_colour():
    from common.toy import shapes

    items, captions = toy_items("pds", 12)
    assert len(items) == 12 and captions == [it.edit_prompt for it in items]
    for it in items:
        (c0, s0, b0), (c1, s1, b1) = shapes.parse_caption(it.prompt), shapes.parse_caption(it.edit_prompt)
        assert c1 not in (c0, b0) and (s1, b1) == (s0, b0)
        assert it.src_image.shape == (3, 64, 64)


def test_evaluate_end_to_end_writes_eval_json(tmp_path, tiny_sd_folder):
    from common.toy.clip_model import create_toy_clip, save_toy_clip

    clip_dir = save_toy_clip(create_toy_clip(), tmp_path / "clip")
    res = CliRunner().invoke(main, ["--loss_type", "sds", "--model", str(tiny_sd_folder), "--clip_model",
                                    str(clip_dir), "--steps", "1", "--device", "cpu", "--save_root",
                                    str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "ev" / "sds" / "eval.json").read_text())
    assert len(result) == 12 and -1 <= result["score"] <= 1  # source_dir + 10 images + score
    from PIL import Image

    with Image.open(tmp_path / "ev" / "sds_contact_sheet.png") as sheet:  # 10 cells of 64 px (16 px x 4), 5 a row
        assert sheet.width == 5 * (64 + 4) + 4 and sheet.height > 2 * (64 + 4) + 2 * 20  # 2 rows, labels under
    assert not list((tmp_path / "ev" / "sds").glob("generated_*"))  # UMich's names only from the main CLI


def test_measure_toy_overrides_are_typed():
    from distillation.measure_toy import parse_overrides

    assert parse_overrides(("lr=0.05", "lora_rank=8", "t_schedule=hifa")) == {"lr": 0.05, "lora_rank": 8,
                                                                               "t_schedule": "hifa"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(("nonsense=1",))


def test_both_toy_judges_verdicts_and_pixel_accuracy(tmp_path):
    """Clean renders pass both judges; a flat image (no object) fails the pixel judge whatever toy-clip says."""
    import torch

    from common.images import save_image
    from common.toy import shapes
    from distillation.evaluate import contact_sheet, judge_images

    specs = shapes.sample_specs(3, shapes.split_seed("test"))
    captions = [shapes.caption(s) for s in specs]
    paths = [save_image(img, tmp_path / f"{i}.png") for i, img in enumerate(shapes.render(specs, size=64))]
    paths.append(save_image(torch.full((3, 64, 64), -0.8), tmp_path / "flat.png"))
    accuracy, verdicts = judge_images(paths, captions + [captions[0]])
    assert accuracy["pixel_all"] == 0.75 and {"all", "color", "shape", "background"} <= set(accuracy)
    assert verdicts[0].startswith("toy-clip: ") and f"\npixel: {specs[0].color} {specs[0].shape} on " in verdicts[0]
    assert verdicts[0].endswith("(right)") and verdicts[3].endswith("pixel: no object, IoU 0.00 (WRONG)")
    result = {"source_dir": tmp_path.as_posix(), **{p.as_posix(): 0.25 for p in paths}}
    sheet = contact_sheet(paths, result, verdicts, tmp_path / "sheet.png")
    from PIL import Image

    with Image.open(sheet) as img:  # 4 tiles of 256 px (64 px x 4) in one row, 5 label lines or more under them
        assert img.width == 4 * (256 + 4) + 4 and img.height > 256 + 8 + 5 * 16
