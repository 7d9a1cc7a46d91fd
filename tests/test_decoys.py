"""Queries with decoys (privacy.decoys): the draw, the plan, the CLI and web client over HTTP.
(The attacker's side, the ladder's decoy rung: test_decoy_rung.py.)

References are independent of the code under test: inclusion probabilities and posteriors worked
out by hand, the bytes a recording server received, the model's own code of the private image,
and the server's answer to each recorded upload asked again.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner

from hashveil.cli import main
from privacy.client import connect
from privacy.decoys import (
    MAX_DECOYS,
    bundled_photos,
    check_decoys,
    decoy_photos,
    draw_decoy_labels,
    inclusion_probabilities,
    plan_decoys,
    protect_decoys,
)
from privacy.encode import Encoding
from privacy.pool import AnchorPool
from privacy.send import QueryOptions, query_decoys
from retrieval.core.codes import pack
from retrieval.core.config import override
from retrieval.core.imaging import decode_image, load_image, to_tensor
from retrieval.service.server import create_app
from testkit.data import write_config
from testkit.servers import Recorder, live_server
from testkit.service import CLIENT_BASE, opened_client, random_png
from webui.client import create_client_app

K = 3


@pytest.fixture(scope="module")
def served(tiny_trained):
    cfg, _ = tiny_trained
    # the tiny small_cnn barely moves at 8/255: a budget at which carriers reach most targets
    cfg = override(cfg, privacy={"eps": 0.3, "steps": 60, "step_size": 0.03, "decoy_delay_s": 0.05})
    recorder = Recorder(create_app(cfg))
    with live_server(recorder) as url:
        yield cfg, recorder, url


@pytest.fixture()
def photos(tmp_path) -> Path:
    """A folder of a few "photos" of different sizes (the user's own decoy folder)."""
    folder = tmp_path / "decoy photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, size in enumerate((40, 64, 90)):
        (folder / ("sub" if i else ".") / f"p{i}.png").write_bytes(random_png(rng, size))
    (folder / "notes.txt").write_text("not a photo")
    return folder


def _private(cfg, i: int = 0) -> Path:
    """A query-split-like image of the tiny dataset (the image the user searches with)."""
    return sorted((Path(cfg.data.data_dir) / "img").glob("*.png"))[i]


def _ask(url: str, data: bytes) -> dict:
    r = requests.post(f"{url}/api/search", files={"image": ("q.png", data, "image/png")}, timeout=30)
    r.raise_for_status()
    return r.json()


# the draw


def test_inclusion_probabilities_by_hand() -> None:
    # k = 3 of prior 1:2:3:4:10 -> e would get 3 * 10/20 > 1: capped at 1, the other 2 shared as 1:2:3:4
    pi = inclusion_probabilities({"a": 1, "b": 2, "c": 3, "d": 4, "e": 10, "z": 0}, 3)
    assert pi == pytest.approx({"a": 0.2, "b": 0.4, "c": 0.6, "d": 0.8, "e": 1.0})
    assert inclusion_probabilities({"a": 1, "b": 1}, 2) == {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match="3 distinct labels needed; the prior has 2"):
        inclusion_probabilities({"a": 1, "b": 1, "c": 0}, 3)


def test_decoy_labels_leave_every_label_of_a_draw_equally_likely_to_be_the_real_one() -> None:
    """With an injected generator: the real label drawn from the prior, then the decoys. Each label
    is in a draw with probability K * prior (by hand: 0.2 ... 0.8), never twice, and within a draw
    each label is the real one with probability 1/K (the capped label, in every draw: its prior)."""
    prior = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 10}
    names, p = list(prior), np.array(list(prior.values()), float) / 20
    rng = np.random.default_rng(42)
    seen, real_in = Counter(), {}
    n = 20_000
    for _ in range(n):
        real = names[rng.choice(5, p=p)]
        decoys = draw_decoy_labels(real, prior, 3, rng)
        assert len(decoys) == 2 and real not in decoys and len(set(decoys)) == 2
        draw = frozenset([real, *decoys])
        seen.update(draw)
        real_in.setdefault(draw, Counter())[real] += 1
    for label, pi in {"a": 0.2, "b": 0.4, "c": 0.6, "d": 0.8, "e": 1.0}.items():
        assert seen[label] / n == pytest.approx(pi, abs=0.015)
    for draw, counts in real_in.items():
        if sum(counts.values()) > 2000:
            for label in draw - {"e"}:
                assert counts[label] / sum(counts.values()) == pytest.approx(0.25, abs=0.03)
            assert counts["e"] / sum(counts.values()) == pytest.approx(0.5, abs=0.03)
    # a balanced prior: a uniform 1/K for every label of a draw; a seeded generator repeats
    flat = {n: 5 for n in "abcdefgh"}
    first = [draw_decoy_labels("a", flat, 4, np.random.default_rng(7)) for _ in range(2)]
    assert first[0] == first[1] and len(first[0]) == 3
    # a real label the prior does not hold: a plain draw of K - 1 others
    assert len(draw_decoy_labels(None, flat, 4, rng)) == 3


def _pool(per_label: int = 30, bits: int = 16) -> AnchorPool:
    """Codes clustered by label (a few bits off a centre per label), so each item's retrieval gives its own label."""
    rng = np.random.default_rng(1)
    centres = {n: rng.choice([-1, 1], size=bits) for n in "wxyz"}
    items = []
    for label, centre in centres.items():
        for _ in range(per_label):
            code = centre.copy()
            code[rng.choice(bits, size=int(rng.integers(0, 2)), replace=False)] *= -1
            items.append({"id": len(items), "code": pack(code[None])[0].tobytes().hex(), "labels": [label]})
    counts = {"w": 300, "x": 250, "y": 250, "z": 200}  # K = 3: inclusion 0.9, 0.75, 0.75, 0.6 by hand
    return AnchorPool.from_json(
        {
            "per_label": per_label,
            "radius": 2,
            "labels": [{"name": n, "count": c} for n, c in counts.items()],
            "items": items,
        }
    )


def test_plan_sends_the_real_code_among_pool_codes_of_drawn_labels(photos) -> None:
    pool = _pool()
    own = pool.codes[0]  # a code whose retrieval gives "w"
    assert pool.likely_label(own) == "w" and set(pool.inferred_labels) == set("wxyz")
    paths = decoy_photos(photos)
    positions = Counter()
    rng = np.random.default_rng(3)
    for _ in range(300):
        plan = plan_decoys(pool, own, K, paths, 24, rng)
        assert plan.carriers.shape == (K, 3, 24, 24) and 0 <= plan.carriers.min() <= plan.carriers.max() <= 1
        assert np.array_equal(plan.targets[plan.real], own) and plan.labels[plan.real] == "w"
        for i in set(range(K)) - {plan.real}:  # each decoy: a pool item's code whose retrieval is its label
            rows = [j for j, c in enumerate(pool.codes) if np.array_equal(c, plan.targets[i])]
            assert rows and {pool.inferred_labels[j] for j in rows} == {plan.labels[i]}
        assert len(set(plan.labels)) == K
        positions[plan.real] += 1
    assert all(60 <= positions[i] <= 140 for i in range(K))  # the real one's place is uniform: 100 each
    # the real label drawn from the prior (an own code of that label), the K labels of a plan hold
    # each label with probability K * prior: 0.9, 0.75, 0.75, 0.6 worked out by hand
    prior = {"w": 0.3, "x": 0.25, "y": 0.25, "z": 0.2}
    own_of = {n: pool.codes[[j for j, lab in enumerate(pool.inferred_labels) if lab == n][0]] for n in prior}
    held, n = Counter(), 3000
    for _ in range(n):
        real = str(rng.choice(list(prior), p=list(prior.values())))
        held.update(plan_decoys(pool, own_of[real], K, paths, 8, rng).labels)
    assert {k: v / n for k, v in held.items()} == pytest.approx(
        {"w": 0.9, "x": 0.75, "y": 0.75, "z": 0.6}, abs=0.03
    )
    # decoys lie as far from their label's centre (majority bit of its codes) as the real code does
    bits = np.unpackbits(pool.codes, axis=1)
    centre = {n: (bits[[lab == n for lab in pool.inferred_labels]].mean(axis=0) >= 0.5) for n in "wxyz"}
    off = {
        d: next(
            c
            for c, lab in zip(pool.codes, pool.inferred_labels)
            if lab == "w" and (np.unpackbits(c) != centre["w"]).sum() == d
        )
        for d in (0, 1)
    }
    for d, code in off.items():
        plan = plan_decoys(pool, code, K, paths, 8, rng)
        for i in set(range(K)) - {plan.real}:
            assert (np.unpackbits(plan.targets[i]) != centre[plan.labels[i]]).sum() == d
    # the same generator state gives the same plan
    a, b = (plan_decoys(pool, own, K, paths, 24, np.random.default_rng(9)) for _ in range(2))
    assert a.real == b.real and a.labels == b.labels and np.array_equal(a.targets, b.targets)
    assert np.array_equal(a.carriers.numpy(), b.carriers.numpy())


def test_bad_decoy_input_is_a_clear_error(photos, tmp_path) -> None:
    for bad in (0, MAX_DECOYS + 1, True, 2.0):
        with pytest.raises(ValueError, match=r"decoys must be an int in \[1, 16\]"):
            check_decoys(bad)
    with pytest.raises(
        ValueError, match="5 uploads need 5 labels that the server tells apart; .* has 4: use --decoys 4"
    ):
        plan_decoys(_pool(), _pool().codes[0], 5, decoy_photos(photos), 24, np.random.default_rng(0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no photos"):
        decoy_photos(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a folder"):
        decoy_photos(photos / "notes.txt")
    assert [p.name for p in decoy_photos("")] == ["grace_hopper.jpg"] == [p.name for p in bundled_photos()]
    assert len(decoy_photos(photos)) == 3  # recursive, image files only


# over HTTP: the Python API, the command line, the web client


def test_query_with_decoys_sends_k_alike_carriers_and_returns_only_the_real_answer(
    served, photos, tmp_path
) -> None:
    cfg, recorder, url = served
    privacy = override(cfg, privacy={"seed": 5}).privacy
    private_path = _private(cfg)
    private = to_tensor(load_image(private_path))
    n = len(recorder.requests)
    sent = query_decoys(
        private,
        url,
        privacy,
        Encoding(),
        tmp_path / "cache",
        QueryOptions("carrier"),
        K,
        decoy_photos(photos),
    )
    uploads = recorder.uploads(n)
    assert len(uploads) == K and sent.data in uploads and len(sent.decoys) == K - 1
    assert private_path.read_bytes() not in uploads  # the private image is never sent
    side = cfg.model.image_size
    assert {decode_image(u).size for u in uploads} == {(side, side)}  # the same dimensions, every one
    protector, _ = connect(url, privacy, tmp_path / "cache")
    own = protector.model.encode(private[None])[0]
    assert np.array_equal(sent.protected.target_code, own)  # the real query points at the private code
    answers = [_ask(url, u) for u in uploads]  # the server's answer to each upload, asked again
    real = answers[uploads.index(sent.data)]
    assert sent.answer["code"] == real["code"] and [h["id"] for h in sent.answer["results"]] == [
        h["id"] for h in real["results"]
    ]
    if sent.encoded.at_target:
        assert real["code"] == own.tobytes().hex()
    assert len(set(uploads)) == K


def test_the_real_upload_has_no_fixed_place_or_size_rank(served, photos, tmp_path) -> None:
    """Over seeded runs of the whole client pipeline, one private image after another (their labels
    cycle through the dataset's, as real queries' follow the prior): the real file's position and its
    rank by file size among the K take every value, about equally often. (For one fixed private
    image they need not: the effort, hence the size, depends on the target label, which the server
    sees anyway; only over the labels users ask for is the real one's rank uniform.)"""
    cfg, _, url = served
    protector, _ = connect(url, override(cfg, privacy={"seed": 8}).privacy, tmp_path / "cache")
    places, ranks = Counter(), Counter()
    for i in range(45):
        private = to_tensor(load_image(_private(cfg, i)))
        q = protect_decoys(protector, private, K, decoy_photos(photos), Encoding())
        sizes = [len(f.data) for f in q.files]
        places[q.real] += 1
        ranks[sorted(sizes).index(sizes[q.real])] += 1
    assert all(5 <= places[i] <= 25 for i in range(K)), places  # 15 each if uniform
    assert all(5 <= ranks[i] <= 25 for i in range(K)), ranks


def _cli(cfg, url: str, tmp_path: Path, *flags: str):
    config = write_config(tmp_path / "client.toml", override(cfg, paths={"work_dir": tmp_path / "client"}))
    return CliRunner().invoke(
        main, ["--config", str(config), "query", str(_private(cfg, 2)), "--server", url, *flags]
    )


def test_query_command_with_decoys_prints_only_the_real_results(served, photos, tmp_path) -> None:
    cfg, recorder, url = served
    n = len(recorder.requests)
    result = _cli(
        cfg, url, tmp_path, "--decoys", str(K), "--decoy-dir", str(photos), "--seed", "4", "--k", "5"
    )
    assert result.exit_code == 0, result.output
    uploads = recorder.uploads(n)
    assert len(uploads) == K and "sent 3 uploads in random order" in result.output
    printed = [int(line.split()[1]) for line in result.output.splitlines() if line.startswith("  id ")]
    code = next(
        line.split()[1].rstrip(":") for line in result.output.splitlines() if line.startswith("code ")
    )
    answers = {_ask(url, u)["code"]: _ask(url, u) for u in uploads}
    assert printed == [h["id"] for h in answers[code]["results"][:5]]


def test_query_command_refuses_bad_decoy_input(served, photos, tmp_path) -> None:
    cfg, recorder, url = served
    n = len(recorder.requests)
    zero = _cli(cfg, url, tmp_path, "--decoys", "0")
    assert zero.exit_code == 2 and "0 is not in the range x>=1" in zero.output
    many = _cli(cfg, url, tmp_path, "--decoys", "17", "--decoy-dir", str(photos))
    assert many.exit_code == 1 and "decoys must be an int in [1, 16]" in many.output
    assert "Traceback" not in many.output and many.output.count("\n") <= 3
    (tmp_path / "empty").mkdir()
    empty = _cli(cfg, url, tmp_path, "--decoys", "2", "--decoy-dir", str(tmp_path / "empty"))
    assert empty.exit_code == 1 and "holds no photos" in empty.output
    mixed = _cli(cfg, url, tmp_path, "--decoys", "2", "--mode", "semantic")
    assert (
        mixed.exit_code == 2
        and "takes no --private, --target-label or --mode other than carrier" in mixed.output
    )
    assert recorder.uploads(n) == []  # nothing was sent


def _web_job(client, form: dict) -> dict:
    r = client.post("/protect", data=form, base_url=CLIENT_BASE)
    assert r.status_code == 202, r.get_json()
    for _ in range(1200):
        status = client.get(r.get_json()["status_url"], base_url=CLIENT_BASE).get_json()
        if status["state"] in ("done", "failed"):
            assert status["state"] == "done", status["error"]
            return status
        time.sleep(0.05)
    raise AssertionError("the web client's job did not finish")


def test_web_client_sends_decoys_and_shows_only_the_real_results(served, photos, tmp_path) -> None:
    cfg, recorder, url = served
    web = override(
        cfg, paths={"work_dir": tmp_path / "web"}, privacy={"decoy_dir": str(photos), "decoy_delay_s": 0.05}
    )
    client = opened_client(create_client_app(url, web))
    image = _private(cfg, 3).read_bytes()
    status = _web_job(client, {"decoys": str(K), "image": (io.BytesIO(image), "mine.png")})
    facts = status["result"]
    assert (
        facts["decoys"]["k"] == K
        and len(facts["decoys"]["labels"]) == K - 1
        and facts["decoys"]["photos"] == 3
    )
    assert set(status["images"]) == {"original", "protected", "perturbation", "private"}
    n = len(recorder.requests)
    body = client.post(status["send_url"], data={}, base_url=CLIENT_BASE).get_json()
    uploads = recorder.uploads(n)
    assert len(uploads) == K and image not in uploads and body["uploads"] == K
    answers = [_ask(url, u) for u in uploads]
    real = next(a for a in answers if a["code"] == body["code"])
    assert [h["id"] for h in body["results"]] == [h["id"] for h in real["results"][:24]]
    # the thumbnails of every answer were fetched at once; showing the real ones asks the server nothing
    fetched = {int(r.path.rsplit("/", 1)[1]) for r in recorder.since(n) if r.path.startswith("/api/images/")}
    assert fetched == {h["id"] for a in answers for h in a["results"][:24]}
    before = len(recorder.requests)
    for hit in body["results"][:5]:
        assert client.get(hit["thumb_url"], base_url=CLIENT_BASE).status_code == 200
    assert len(recorder.requests) == before


def test_web_client_refuses_bad_decoy_input(served, photos, tmp_path) -> None:
    cfg, _, url = served
    image = _private(cfg).read_bytes()
    client = opened_client(create_client_app(url, override(cfg, paths={"work_dir": tmp_path / "w"})))
    r = client.post(
        "/protect", data={"decoys": "99", "image": (io.BytesIO(image), "a.png")}, base_url=CLIENT_BASE
    )
    assert r.status_code == 400 and "decoys" in r.get_json()["error"]
    (tmp_path / "empty").mkdir()
    empty = override(cfg, paths={"work_dir": tmp_path / "w2"}, privacy={"decoy_dir": str(tmp_path / "empty")})
    client = opened_client(create_client_app(url, empty))
    r = client.post(
        "/protect", data={"decoys": "2", "image": (io.BytesIO(image), "a.png")}, base_url=CLIENT_BASE
    )
    assert r.status_code == 400 and "holds no photos" in r.get_json()["error"]
