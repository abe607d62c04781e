"""The benchmark command's bookkeeping on a tiny config (timings themselves are measured by scripts/bench.py, not
asserted here)."""

from __future__ import annotations

import json
import sys

import jax.numpy as jnp
import pytest

TINY = dict(vocab_size=64, d_model=16, num_layers=1, num_heads=2, seq_len=8, batch_size=2)


@pytest.mark.slow
def test_bench_rows_ratios_and_json(tmp_path, capsys):
    import sys

    sys.path.insert(0, "scripts")
    from bench import main

    argv = [
        "--schemes",
        "nope",
        "rope",
        "--steps",
        "2",
        "--rounds",
        "3",
        "--warmup",
        "1",
        "--json",
        "--no-peer",
        "--skip",
        "embedding",
        "reader",
        "data",
        "--out",
        str(tmp_path),
    ]
    argv += ["--loss-chunk", "4", "--depths", "2"]
    argv += [f"--{k}={v}" for k, v in TINY.items()]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == [
        "train_step/nope",
        "train_step/rope",
        "train_step/rope+loss_chunk=4",
        "train_step/rope+scan_layers",
        "breakdown/rope",
        "profile/rope",
        "compile/rope/2_layers",
    ]
    parts = rows[4]["parts_ms"]
    assert set(parts) == {"layers", "readout_loss", "readout_loss_plain", "optimizer", "step"}
    assert all(v > 0 for v in parts.values())
    by_source = rows[5]["by_source_ms"]  # the traced step's time by jax operation: the matmuls are in it
    assert by_source and all(v > 0 for v in by_source.values())
    assert any(name.startswith("dot_general ->") for name in by_source)
    assert rows[6]["compile_s_loop"] > 0 and rows[6]["compile_s_scan"] > 0
    rows = rows[:4]
    for r in rows:
        assert (
            {"name", "tokens_per_s", "step_ms", "mfu"} <= r.keys() and r["tokens_per_s"] > 0 and 0 < r["mfu"]
        )
    assert rows[0]["ratio_to_nope"] == 1.0
    # Interleaved rounds: each row's ratio is the median of its within-round ratios to nope, not of pooled medians.
    saved = json.loads((tmp_path / "bench.json").read_text())
    nope, rope = saved["rows"][0], saved["rows"][1]
    assert saved["rounds"] == 3 and len(rope["round_medians_ms"]) == 3
    within = sorted(a / b for a, b in zip(rope["round_medians_ms"], nope["round_medians_ms"], strict=True))
    assert rope["ratio_to_nope"] == pytest.approx(within[1])
    table = (tmp_path / "table.md").read_text()
    assert "| rope |" in table and "| rope+loss_chunk=4 |" in table and "GFLOP/s" in table
    assert "| 2 |" in table and "| whole step |" in table  # the compile-time and breakdown tables
    assert "XLA's cost analysis of the layers" in table and "jax.profiler trace of rope" in table
    assert (tmp_path / "steps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "(steps.png)" in table


def test_peer_rounds_alternate_ours_and_the_peer(tmp_path):
    from research.bench.peer import available

    if not available():
        pytest.skip("the optional PyTorch peer is not installed (pip install -e .[peers])")
    sys.path.insert(0, "scripts")
    from bench import main

    skip = ["steps", "variants", "breakdown", "profile", "compile", "embedding", "reader"]
    argv = ["--steps", "1", "--warmup", "1", "--peer-rounds", "2", "--skip", *skip, "--out", str(tmp_path)]
    assert main(argv + [f"--{k}={v}" for k, v in TINY.items()]) == 0
    peer = json.loads((tmp_path / "bench.json").read_text())["peer"]
    assert len(peer["rounds"]) == 2 and all(r["ours_ms"] > 0 and r["peer_ms"] > 0 for r in peer["rounds"])
    assert peer["ours_over_peer_median"] > 0
    assert "Interleaved: 2 rounds" in (tmp_path / "table.md").read_text()


def test_peer_model_matches_our_parameter_count():
    from research.bench.peer import available, bench_peer

    if not available():
        pytest.skip("the optional PyTorch peer is not installed (pip install -e .[peers])")
    ref = dict(TINY, vocab_size=8192, d_model=256, num_layers=4, num_heads=4, seq_len=16)
    peer = bench_peer(ref=ref, steps=1, warmup=1)
    ours = 8192 * 256 + 4 * 12 * 256 * 256  # tied table + attention (4 E^2) + MLP (8 E^2) per layer
    assert abs(peer["params_total"] - ours) / ours < 0.01  # the peer differs only by its norm gains


def test_embedding_and_reader_rows(tmp_path, monkeypatch):
    from research.bench.embedding import embedding_bandwidth
    from research.bench.reader import reader_benchmark

    sparse, dense = embedding_bandwidth(vocab=4096, dim=64, tokens=256, repeats=2)
    assert (
        sparse["name"] == "embedding_gather_scatter_4096x64"
        and dense["name"] == "embedding_dense_grad_4096x64"
    )
    assert sparse["bytes"] == 4 * 5 * 256 * 64 and dense["bytes"] == 4 * (5 * 256 * 64 + 4096 * 64)
    assert all(0 < r["fraction_of_copy"] and r["step_ms"] > 0 for r in (sparse, dense))
    assert dense["zero_fill_ms"] > 0
    from research.bench.report import render

    result = {
        "reference": {}, "rows": [], "machine": {"cpu": "cpu", "cores": 2}, "device": {"count": 1, "kind": "cpu"},
        "versions": {}, "embedding": [sparse, dense], "copy_bytes_per_s": 2e10, "copy_bytes_per_s_fresh": 1e10,
    }  # fmt: skip
    table = render(result, "python scripts/bench.py --skip steps")
    assert "20.0 GB/s into an already-mapped buffer (10.0 GB/s into a new allocation" in table
    assert (
        f"| {sparse['step_ms']:.2f} | {sparse['bytes_per_s'] / 1e9:.1f} | **{sparse['fraction_of_copy']:.0%}** |"
        in table
    )
    assert "default malloc, no huge pages" in table
    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path))
    rows = reader_benchmark(words=300, dim=8, repeats=1, log=lambda *_: None)
    assert [r["name"] for r in rows] == ["reader_word2vec_text_300x8", "reader_word2vec_binary_300x8"]
    assert all(r["ours_s"] > 0 and r["gensim_s"] > 0 and r["speedup_vs_gensim"] > 0 for r in rows)


@pytest.mark.slow
def test_bench_in_bfloat16(tmp_path, capsys):
    """`--compute_dtype bfloat16` (the GPU row of the benchmark): the step runs in bfloat16, MFU is against the
    bfloat16 matmul rate, and the float32-only sections (breakdown, peer) are left out, saying so."""
    import sys

    sys.path.insert(0, "scripts")
    from bench import main

    from research.bench.reference import reference

    r = reference("nope", {**TINY, "compute_dtype": "bfloat16"})
    assert "bf16" in r.step_fn.lower(r.params, r.opt_state, r.inputs, r.targets, jnp.int32(0)).as_text()
    argv = ["--schemes", "nope", "--steps", "2", "--warmup", "1", "--json", "--compute_dtype", "bfloat16"]
    argv += [
        "--skip",
        "variants",
        "profile",
        "compile",
        "embedding",
        "reader",
        "data",
        "--out",
        str(tmp_path),
    ]
    assert main(argv + [f"--{k}={v}" for k, v in TINY.items()]) == 0
    captured = capsys.readouterr()
    (row,) = [json.loads(line) for line in captured.out.splitlines()]
    assert row["name"] == "train_step/nope" and row["mfu"] > 0
    assert "bfloat16 matmul peak" in captured.err and "left out" in captured.err
    assert "AdamW, bfloat16" in (tmp_path / "table.md").read_text()
    with pytest.raises(SystemExit):  # argparse names the valid choices
        main(["--compute_dtype", "float16"])


READER_ROW = {"name": "reader/x", "ours_s": 1.0, "gensim_s": 2.0, "speedup_vs_gensim": 2.0}


@pytest.mark.slow
def test_data_section_merges_into_the_saved_results(tmp_path, monkeypatch, capsys):
    """`--only data` on 1 MB parts: preparing rows (ours, one process, the Hugging Face peer), peak memory per size,
    a training run on the largest, batch time against the step; the saved results of other sections are kept."""
    sys.path.insert(0, "scripts")
    from bench import main

    from research.bench import data

    monkeypatch.setenv("RESEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "PART_MB", 1)
    monkeypatch.setattr(data, "BPE", {**data.BPE, "vocab_size": 1000, "max_train_lines": 5000})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "bench.json").write_text(json.dumps({"rows": [], "reader": [READER_ROW]}))
    tiny = [f"--{k}={v}" for k, v in TINY.items() if k != "vocab_size"]
    argv = ["--only", "data", "--data-mb", "1", "2", "--data-slice-mb", "1", "--data-rounds", "1", *tiny]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    result = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert result["reader"] == [READER_ROW]
    names = {r["name"] for r in result["data"]["rows"]}
    assert {"prepare/byte/1_process", "prepare/bpe/1_process", "hf_tokenizers/encode_batch"} <= names
    assert {
        "prepare_memory/byte/1MB",
        "prepare_memory/bpe/2MB",
        "train_memory/byte/2MB",
        "batch/byte",
    } <= names
    assert all(r["peak_rss_mb"] > 10 for r in result["data"]["rows"] if "peak_rss_mb" in r)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| prepare/bpe/1_process |" in table and "Drawing one reference batch" in table


def test_a_merged_section_keeps_the_saved_provenance_and_states_its_own():
    """`--only data` on a saved bench.json: the header still names the full run's command, date and machine, and
    the merged section gets its own line."""
    sys.path.insert(0, "scripts")
    from bench import provenance

    from research.bench.report import _provenance

    saved = {"rows": [], "machine": {"cpu": "Old CPU", "cores": 2}, "command": "python scripts/bench.py",
             "date": "2026-12-02", "versions": {"jax": "old"}, "device": {"count": 1, "kind": "cpu"}}  # fmt: skip
    now = {"machine": {"cpu": "New CPU", "cores": 2}, "command": "python scripts/bench.py --only data",
           "date": "2026-12-07", "versions": {"jax": "new"}, "device": {"count": 1, "kind": "cpu"}, "git_sha": "abc"}  # fmt: skip
    merged = provenance(saved, now, ["data"])
    assert merged["machine"]["cpu"] == "Old CPU" and merged["date"] == "2026-12-02"
    assert merged["sections"]["data"]["machine"]["cpu"] == "New CPU"
    assert "Old CPU" in _provenance(merged, "x") and "2026-12-07" in _provenance(
        merged["sections"]["data"], "x"
    )
    assert "sections" not in provenance(merged, now, [])  # a full run describes itself
