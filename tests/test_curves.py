"""Learning-curve plots of online runs (agent.curves)."""

from pathlib import Path

import imageio.v3 as iio
import pytest

from agent.curves import action_repeat, main, read_xy


def fake_run(root: Path, name: str, repeat: int | None) -> Path:
    run = root / name
    run.mkdir()
    (run / "eval.csv").write_text("step,eval/return,eval/success\n100,1.5,0.0\n200,3.0,0.5\n")
    (run / "episodes.csv").write_text("step,train/episode_return\n50,0.5\n100,1.0\n150,2.0\n")
    if repeat is not None:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_text(f"task:\n  suite: dmc\n  action_repeat: {repeat}\n")
    return run


def test_curves_cli_plots_runs_and_scales_steps_by_action_repeat(tmp_path):
    a, b = fake_run(tmp_path, "a", 2), fake_run(tmp_path, "b", None)
    assert action_repeat(a) == 2 and action_repeat(b) == 1
    assert read_xy(a / "eval.csv", "eval/return") == ([100.0, 200.0], [1.5, 3.0])
    out = main([str(a), str(b), f"out={tmp_path / 'c.png'}", "labels=x,y"])
    image = iio.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0
    assert main([str(b), "metric=success", f"out={tmp_path / 's.png'}"]).exists()
    with pytest.raises(ValueError, match="task dmc/None has no success rate"):  # DMC never terminates
        main([str(a), "metric=success", f"out={tmp_path / 's.png'}"])


def test_curves_cli_rejects_a_directory_without_eval_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="online"):
        main([str(tmp_path), f"out={tmp_path / 'c.png'}"])
    with pytest.raises(SystemExit, match="2 labels for 1 run"):
        main([str(fake_run(tmp_path, "a", 1)), "labels=one,two"])
    with pytest.raises(SystemExit, match="bad argument"):
        main([str(tmp_path / "a"), "--repr"])  # the old flag style is refused, not read as a path
    (tmp_path / "a" / "eval.csv").write_text("step,eval/return,eval/success\n")  # header only
    with pytest.raises(ValueError, match="no values of 'eval/return' yet"):
        main([str(tmp_path / "a"), f"out={tmp_path / 'c.png'}"])


def test_repr_curves_of_representation_runs_with_table(tmp_path, capsys):
    cols = ["step", "repr/heldout_centroid_acc", "repr/heldout_knn_acc", "repr/encoding_size", "repr/count_clusters"]
    a = tmp_path / "a"
    a.mkdir()
    (a / "repr.csv").write_text(",".join(cols) + "\n0,0.2,0.1,5.0,1\n500,0.9,0.8,1.0,7\n1000,0.7,0.85,0.5,8\n")
    b = tmp_path / "b"
    (b / "analysis").mkdir(parents=True)  # a curve rebuilt by agent.analyze checkpoints=all
    (b / "analysis" / "repr.csv").write_text(",".join(cols) + "\n500,0.3,0.3,2.0,2\n1000,0.4,,1.0,3\n")
    out = main([str(a), str(b), "repr=true", f"out={tmp_path / 'r.png'}"])
    assert iio.imread(out).std() > 0
    table = capsys.readouterr().out
    assert "| a | final | 1000 | 0.7 | 0.85 |" in table and "| a | best | 500 | 0.9 | 0.8 |" in table
    assert "| b | final | 1000 | 0.4 | - |" in table  # an empty cell stays visible as a dash
    with pytest.raises(FileNotFoundError, match="no repr.csv"):
        main([str(tmp_path), "repr=true", f"out={tmp_path / 'x.png'}"])
