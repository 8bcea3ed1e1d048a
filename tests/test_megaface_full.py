"""Table 3's full tier on tiny files in the exact on-disk layouts: CASIA-WebFace identity folders,
the MegaFace devkit's template lists (``facescrub_features_list.json``,
``megaface_features_list.json_<N>_<set>``), FaceScrub / MegaFace image trees, insightface's noise
lists; the scoring on hand-computed cases; the whole ``+table=megaface tier=full`` path."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks import runner
from benchmarks.data import DatasetError
from benchmarks.data import faces
from benchmarks.evaluation import megaface as M

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "benchmarks" / "conf"


def _unit(deg):
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


# Two FaceScrub identities and two distractors on the unit circle (angles in degrees; cosine
# distance is monotone in the angle): A = 0, 10, 50; B = 180, 200; distractors d1 = 25, d2 = 150.
A_B = [0, 10, 50, 180, 200]
IDS = ["Aaron Eckhart"] * 3 + ["Adam Brody"] * 2
DIS = [25, 150]


def _feats(angles):
    return torch.tensor([_unit(a) for a in angles], dtype=torch.float64)


def test_scoring_hand_computed_two_identities():
    """Every ordered (probe, target) pair of an identity; the target is a hit if it is nearer to
    the probe than every distractor.

    No cleaning (nearest distractor: a1 25, a2 15, a3 25, b1 30, b2 50):
      (a1,a2) 10<25 hit, (a1,a3) 50 miss, (a2,a1) 10<15 hit, (a2,a3) 40 miss, (a3,a1) 50 miss,
      (a3,a2) 40 miss, (b1,b2) 20<30 hit, (b2,b1) 20<50 hit                      -> 4/8 = 50 %
    d1 listed as distractor noise (removed; nearest is d2 >= 100 deg from A, 30/50 from B): 8/8
    a1 listed as FaceScrub noise, "remove": A = {a2, a3}: (a2,a3) 40>15, (a3,a2) 40>25 miss,
      B 2 hits                                                                   -> 2/4 = 50 %
    a1 listed, "center": a1 := normalize(a2 + a3) = 30 deg (nearest distractor 5):
      (a1',a2) 20 miss, (a1',a3) 20 miss, (a2,a1') 20>15 miss, (a2,a3) miss,
      (a3,a1') 20<25 hit, (a3,a2) miss, B 2 hits                                 -> 3/8 = 37.5 %
    """
    p, d = _feats(A_B), _feats(DIS)
    r = M.score_megaface(p, IDS, d)
    assert r["rank1"] == 50.0 and r["num_pairs"] == 8 and r["num_distractors_used"] == 2
    r = M.score_megaface(p, IDS, d, distractor_noise=[True, False])
    assert r["rank1"] == 100.0 and r["num_distractors_used"] == 1 and r["distractors_removed"] == 1
    noisy = [True, False, False, False, False]
    r = M.score_megaface(p, IDS, d, probe_noise=noisy, facescrub_noise_action="remove")
    assert r["rank1"] == 50.0 and r["num_pairs"] == 4 and r["probes_removed"] == 1
    r = M.score_megaface(p, IDS, d, probe_noise=noisy, facescrub_noise_action="center")
    assert r["rank1"] == 37.5 and r["num_pairs"] == 8 and r["probes_replaced"] == 1
    # the centre is insightface's: sum of the clean features + U(-1e-3, 1e-3), L2-normalized
    c, orphan = M.center_noisy_probes(p, IDS, noisy)
    assert not orphan.any() and torch.allclose(c[0], _feats([30])[0], atol=2e-3)
    assert torch.equal(c[1:], p[1:]) and c[0].norm().item() == pytest.approx(1.0)
    # an identity whose images are all listed has no centre: its probes are dropped
    _, orphan = M.center_noisy_probes(p, IDS, [False, False, False, True, True])
    assert orphan.tolist() == [False, False, False, True, True]


def _save_img(path, shade):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 20), (shade % 256, (7 * shade) % 256, (13 * shade) % 256)).save(path)


FS_PATHS = ["Aaron Eckhart/Aaron Eckhart_1.jpg", "Aaron Eckhart/Aaron Eckhart_2.jpg",
            "Aaron Eckhart/Aaron Eckhart_3.jpg", "Adam Brody/Adam Brody_17.jpg", "Adam Brody/Adam Brody_18.jpg"]
MF_PATHS = ["991/99137011@N00/4473578624_0.jpg", "992/99263473@N00/8013286545_1.jpg",
            "993/99312345@N07/1234567890_0.jpg", "994/99498765@N02/2345678901_2.jpg"]


def _fake_megaface(root, num=4):
    """The devkit's templatelists, FaceScrub and MegaFace image trees, insightface's noise lists."""
    tl = root / "devkit" / "templatelists"
    tl.mkdir(parents=True)
    (tl / "facescrub_features_list.json").write_text(json.dumps({"path": FS_PATHS, "id": IDS}))
    (tl / faces.megaface_list_name(num)).write_text(json.dumps({"path": MF_PATHS[:num]}))
    for k, p in enumerate(FS_PATHS):
        _save_img(root / "facescrub_images" / p, 30 * k)
    for k, p in enumerate(MF_PATHS[:num]):
        _save_img(root / "megaface_images" / p, 200 + 11 * k)
    # noise lists as insightface ships them: '#' header, FaceScrub by file name (underscores,
    # another extension), MegaFace by <a>/<b>/<file> (optionally after a tab)
    (root / "facescrub_noises.txt").write_text("# FaceScrub noises\nAaron_Eckhart_1.png\nNobody_Here_9.png\n")
    (root / "megaface_noises.txt").write_text("# MegaFace noises\nx\t991/99137011@N00/4473578624_0.jpg\n")
    return root


def _options(root, **kw):
    mf = dict(templatelists=str(root / "devkit" / "templatelists"), facescrub_images=str(root / "facescrub_images"),
              megaface_images=str(root / "megaface_images"), num_distractors=2,
              megaface_noises=str(root / "megaface_noises.txt"), facescrub_noises=str(root / "facescrub_noises.txt"))
    mf.update(kw)
    return faces.megaface_options(mf)


def test_feature_files_round_trip_and_noise_lists(tmp_path):
    """Features written in the devkit's layout, scored back from disk with the noise lists."""
    root = _fake_megaface(tmp_path / "mf", num=2)
    tl = root / "devkit" / "templatelists"
    out = M.write_devkit_features(tmp_path / "feat", FS_PATHS, IDS, _feats(A_B), MF_PATHS[:2], _feats(DIS))
    assert (tmp_path / "feat" / "facescrub" / (FS_PATHS[0] + "_lfs.bin")).is_file()
    assert (tmp_path / "feat" / "megaface" / (MF_PATHS[1] + "_lfs.bin")).is_file()
    assert Path(out["distractor_list_out"]).name == "megaface_features_list.json_2_1"
    assert "run_experiment.py" in out["devkit_command"] and "-s 2" in out["devkit_command"]
    args = (tl / "facescrub_features_list.json", tl / "megaface_features_list.json_2_1",
            tmp_path / "feat" / "facescrub", tmp_path / "feat" / "megaface", "_lfs.bin")
    r = M.score_feature_files(*args)
    assert r["rank1"] == 50.0 and r["noise_cleaned"] is False and r["num_distractors"] == 2
    # cleaned: d1 removed, a1 ("Aaron_Eckhart_1.png" in the list) -> centre at 30 deg; the only
    # distractor left is d2 (150): A's pairs are all within 40 deg, d2 >= 100 away; B as before
    r = M.score_feature_files(*args, megaface_noises=root / "megaface_noises.txt",
                              facescrub_noises=root / "facescrub_noises.txt")
    assert r["rank1"] == 100.0 and r["noise_cleaned"] is True
    assert r["probes_replaced"] == 1 and r["distractors_removed"] == 1
    # the lists written with the features score the same
    r2 = M.score_feature_files(out["probe_list_out"], out["distractor_list_out"], tmp_path / "feat" / "facescrub",
                               tmp_path / "feat" / "megaface", "_lfs.bin")
    assert r2["rank1"] == 50.0
    with pytest.raises(ValueError, match="both noise lists"):
        M.score_feature_files(*args, megaface_noises=root / "megaface_noises.txt")


def test_protocol_loader_lists_images_noise(tmp_path):
    root = _fake_megaface(tmp_path / "mf", num=2)
    p = faces.load_megaface_protocol(**_options(root, noise_cleaned=True))
    assert len(p.probes) == 5 and len(p.distractors) == 2 and p.num_distractors == 2
    assert p.probe_noise.tolist() == [True, False, False, False, False]
    assert p.distractor_noise.tolist() == [True, False]
    assert [it[1] for it in p.probes.items] == [0, 0, 0, 1, 1]
    assert p.info["noise_cleaned"] is True and p.info["num_distractors_used"] == 1
    img, pid, camid = p.probes[3]
    assert img.mode == "RGB" and (pid, camid) == (1, 0)
    q = faces.load_megaface_protocol(**_options(root))
    assert not q.probe_noise.any() and not q.distractor_noise.any() and q.info["noise_cleaned"] is False
    assert q.info["num_distractors_used"] == 2
    # the noise-list readers follow insightface's remove_noises.py
    assert faces.read_megaface_noises(root / "megaface_noises.txt") == {"991/99137011@N00/4473578624_0.jpg"}
    assert faces.facescrub_key("Aaron Eckhart/Aaron Eckhart_1.jpg") == faces.facescrub_key("Aaron_Eckhart_1.png")


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_protocol_errors_are_one_line(tmp_path):
    root = _fake_megaface(tmp_path / "mf", num=2)
    with pytest.raises(DatasetError) as e:  # the devkit list of another size is absent
        faces.load_megaface_protocol(**_options(root, num_distractors=10))
    assert "megaface_features_list.json_10_1" in _one_line(e)
    (root / "devkit" / "templatelists" / "megaface_features_list.json_3_1").write_text(
        json.dumps({"path": MF_PATHS[:2]}))
    with pytest.raises(DatasetError) as e:
        faces.load_megaface_protocol(**_options(root, num_distractors=3))
    assert "has 2 paths, not num_distractors=3" in _one_line(e)
    os.remove(root / "megaface_images" / MF_PATHS[1])
    with pytest.raises(DatasetError) as e:
        faces.load_megaface_protocol(**_options(root))
    msg = _one_line(e)
    assert "missing 1 of 2 images" in msg and MF_PATHS[1] in msg and "aligned face crops" in msg
    with pytest.raises(DatasetError) as e:
        faces.load_megaface_protocol(**_options(root, facescrub_images=str(tmp_path / "nowhere")))
    assert "FaceScrub images not found" in _one_line(e)
    _save_img(root / "megaface_images" / MF_PATHS[1], 1)
    with pytest.raises(DatasetError) as e:
        faces.load_megaface_protocol(**_options(root, noise_cleaned=True, megaface_noises=str(tmp_path / "no.txt")))
    assert "MegaFace noise list not found" in _one_line(e) and "megaface_noises.txt" in str(e.value)
    (tmp_path / "empty.txt").write_text("# only a comment\n")
    with pytest.raises(DatasetError) as e:
        faces.load_megaface_protocol(**_options(root, noise_cleaned=True, facescrub_noises=str(tmp_path / "empty.txt")))
    assert "has no entries" in _one_line(e)
    with pytest.raises(ValueError, match="dataset.megaface.megaface_noises"):
        faces.load_megaface_protocol(**_options(root, noise_cleaned=True, megaface_noises=None))
    with pytest.raises(ValueError, match="dataset.megaface.nosuchkey"):
        faces.megaface_options({"nosuchkey": 1})
    with pytest.raises(ValueError, match="dataset.megaface.num_distractors"):
        _options(root, num_distractors=0)


def _fake_casia(root, ids=6, per=3):
    for i in range(ids):
        for k in range(per):
            _save_img(root / "CASIA-WebFace" / f"{45 + i:07d}" / f"{k + 1:03d}.jpg", 17 * i + 3 * k)
    return root


def _full_cfg(casia, mf, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "+table=megaface", "tier=full", "dataset=megaface", f"dataset.root={casia}",
            f"dataset.megaface.root={mf}", "dataset.megaface.num_distractors=4", "dataset.loader.num_val_ids=2",
            "model.kwargs.input_size=[16,16]", "train.epochs=1", "train.batch_size=4", "search.B=2",
            "workers=0", "device=cpu", "threads=1", "progress=false", *overrides])
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


@pytest.fixture
def face_roots(tmp_path):
    return _fake_casia(tmp_path / "casia"), _fake_megaface(tmp_path / "megaface", num=4)


def test_full_tier_megaface_trains_on_casia_and_scores_megaface(face_roots, tmp_path):
    casia, mf = face_roots
    cfg = _full_cfg(casia, mf, "method=learn", "subsample=12", "dataset.megaface.noise_cleaned=true",
                    f"dataset.megaface.features_out={tmp_path / 'feat'}")
    assert cfg["model"]["name"] == "sphereface20" and cfg["dataset"]["name"] == "megaface"
    metrics, extra, history = runner.run(cfg)
    assert set(metrics) == {"rank1", "noise_cleaned", "num_distractors"}
    assert 0.0 <= metrics["rank1"] <= 100.0
    assert metrics["noise_cleaned"] is True and metrics["num_distractors"] == 4
    assert len(history) == 1 and len(history[0]["rewards"]) == 2  # B = 2 copies, mAP reward on held-out ids
    assert all(0.0 <= r <= 1.0 for r in history[0]["rewards"])
    assert extra["num_classes"] == 6 - 2
    data = extra["data"]
    assert data["noise_cleaned"] is True and data["num_distractors"] == 4 and data["num_distractors_used"] == 3
    assert data["probes_replaced"] == 1 and data["num_pairs"] == 8 and data["train_set"] == "CASIA-WebFace"
    # the exported (cleaned) features, scored from disk, give the row's number
    out = tmp_path / "feat" / "learn" / "seed=0"
    r = M.score_feature_files(out / "templatelists" / "facescrub_features_list.json",
                              out / "templatelists" / "megaface_features_list.json_3_1",
                              out / "facescrub", out / "megaface", "_lfs.bin")
    assert r["rank1"] == pytest.approx(metrics["rank1"]) and r["num_pairs"] == 8
    assert faces.read_feature_bin(out / "megaface" / (MF_PATHS[1] + "_lfs.bin")).shape == (512, 1)


def test_full_tier_megaface_missing_files_stop_before_training(face_roots, tmp_path):
    casia, mf = face_roots
    with pytest.raises(DatasetError) as e:  # the default 1e6 list is not there
        runner.run(_full_cfg(casia, mf, "method=cosface", "dataset.megaface.num_distractors=1000000"))
    assert "megaface_features_list.json_1000000_1" in _one_line(e)
    with pytest.raises(DatasetError) as e:
        runner.run(_full_cfg(tmp_path / "nowhere", mf, "method=cosface"))
    assert "CASIA-WebFace" in _one_line(e) and "<identity>/<image>.jpg" in str(e.value)
    with pytest.raises(runner.ConfigError, match="dataset.megaface.facescrub_noise_action"):
        runner.run(_full_cfg(casia, mf, "method=cosface", "dataset.megaface.facescrub_noise_action=drop"))


@pytest.mark.slow
def test_hydra_command_full_megaface_writes_a_row(tmp_path):
    """The documented command with data under $LFS_DATA (casia_webface/, megaface/); overriding
    dataset.* keys on the command line needs dataset=megaface there too (the sweep's master
    config is composed with the default dataset)."""
    _fake_casia(tmp_path / "data" / "casia_webface")
    _fake_megaface(tmp_path / "data" / "megaface", num=4)
    env = {**os.environ, "LFS_CACHE": str(tmp_path / "cache"), "LFS_DATA": str(tmp_path / "data")}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "+table=megaface", "tier=full", "dataset=megaface",
           "hydra.sweeper.params.method=cosface", "hydra.launcher.n_jobs=1",
           "dataset.megaface.num_distractors=4", "dataset.loader.num_val_ids=2", "model.kwargs.input_size=[16,16]",
           "train.epochs=1", "train.batch_size=4", "workers=0", "device=cpu", "threads=1", "progress=false",
           f"results_dir={tmp_path / 'res'}", f"hydra.sweep.dir={tmp_path / 'hydra'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [p for p in (tmp_path / "res" / "full" / "megaface").rglob("seed=0.json")]
    assert len(rows) == 1
    row = json.loads(rows[0].read_text())
    assert row["dataset"] == "megaface" and row["method"] == "cosface" and row["tier"] == "full"
    assert row["metrics"]["noise_cleaned"] is False and row["metrics"]["num_distractors"] == 4
    assert row["extra"]["data"]["noise_cleaned"] is False


def test_casia_exclude_ids_and_face_transforms(tmp_path):
    root = _fake_casia(tmp_path / "casia", ids=4, per=2)
    (tmp_path / "overlap.txt").write_text("# FaceScrub overlap\n0000046\n9999999\n")
    d = faces.load_casia_webface(root, exclude_ids=tmp_path / "overlap.txt")
    assert d.classes == ["0000045", "0000047", "0000048"] and d.train.targets == [0, 0, 1, 1, 2, 2]
    assert d.info["excluded_ids"] == 1 and d.info["excluded_unknown"] == 1
    with pytest.raises(DatasetError):
        faces.load_casia_webface(root, exclude_ids=tmp_path / "absent.txt")
    from PIL import Image

    img = Image.new("RGB", (112, 112), (255, 0, 128))
    img.paste((0, 0, 0), (0, 0, 8, 112))  # an 8-px black band that the 112x96 centre crop removes
    x = faces.face_transforms((112, 96), fit="center_crop")["test_transform"](img)
    assert x.shape == (3, 112, 96)
    # (p - 127.5) / 128 for p = 255, 0, 128
    assert torch.allclose(x[:, 50, 50], torch.tensor([127.5, -127.5, 0.5]) / 128, atol=1e-6)
    assert faces.face_transforms((16, 16))["train_transform"](img).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="dataset.fit"):
        faces.face_transforms((112, 96), fit="stretch")
    a, b = faces.face_reward_split(faces.load_casia_webface(root, num_val_ids=2, seed=0).val)
    assert [it[2] for it in a.items] == [0, 0] and [it[2] for it in b.items] == [1, 1]
    assert sorted(it[1] for it in a.items) == sorted(it[1] for it in b.items) == [1, 2]
