"""The experiment files: every run of every committed sweep builds a config that validates (what `scripts/sweep.py
--dry-run` checks), evaluation-only runs depend on the run they evaluate, and bad knobs name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from research.studies.experiment import load_experiment
from research.studies.sweep import plan

EXPERIMENTS = sorted(p.name for p in Path("experiments").glob("*.py"))
TARGETS = [f"experiments/{name}" for name in EXPERIMENTS] + [
    "experiments/length_generalization.py:paper_eval,small",
    "experiments/reproductions.py:ablation=yarn",
    "experiments/pe_extrapolation.py:lr_grid",
    "experiments/pe_extrapolation.py:long",
    "experiments/embedding_size.py:equal_params",
    "experiments/tokenizer_granularity.py:bytes_matched",
    "experiments/char_word.py:fair,quarter",
    "experiments/rope_scaling.py:regime",
    "experiments/length_generalization.py:until_gate",
]


@pytest.mark.parametrize("target", TARGETS)
def test_every_run_of_every_sweep_validates(target, tmp_path):
    study, runs = plan(target, tmp_path)
    assert runs and len({r.name for r in runs}) == len(runs)
    for run in runs:  # an evaluation-only run waits for the run it evaluates, in the same sweep
        if run.settings.train.steps == 0:
            assert run.after is not None and run.after in {r.workdir.absolute() for r in runs}, run.name


def test_randomized_evaluation_is_an_evaluation_only_run_of_the_randomized_run(tmp_path):
    study, runs = plan("experiments/length_generalization.py:paper_eval,small", tmp_path)
    run = next(r for r in runs if "eval_positions=randomized" in r.name)
    assert run.settings.model.positions["eval_mode"] == "randomized"
    assert run.after.name == run.name.replace("eval_positions=randomized,", "")
    module = load_experiment(Path("experiments/length_generalization.py"))
    with pytest.raises(ValueError, match="eval_positions"):
        module.get_config("positions=contiguous,eval_positions=randomized")
    # until_gate evaluates (and gates) randomized runs in the paper's mode; its twins evaluate them contiguously
    study, runs = plan("experiments/length_generalization.py:until_gate,small", tmp_path / "gate")
    trained = next(r for r in runs if "positions=randomized" in r.name and "eval_positions" not in r.name)
    twin = next(r for r in runs if "eval_positions=contiguous" in r.name)
    assert trained.settings.model.positions["eval_mode"] == "randomized" and trained.settings.train.stop_when
    assert twin.settings.model.positions["eval_mode"] == "contiguous" and twin.settings.train.steps == 0
    assert twin.after.name == twin.name.replace("eval_positions=contiguous,", "")
    with pytest.raises(ValueError, match="eval_positions"):
        module.get_config("until_gate=true,positions=randomized,eval_positions=randomized")


def test_the_reproductions_recipes_change_one_setting_each():
    module = load_experiment(Path("experiments/reproductions.py"))
    base = module.get_config("positional=t5_bias")
    scaled = module.get_config("positional=t5_bias,recipe=scaled_buckets")
    assert {**base.model.positional, "num_buckets": 16, "max_distance": 32} == scaled.model.positional
    assert base.train == scaled.train and base.data == scaled.data
    with pytest.raises(ValueError, match="recipe"):
        module.get_config("recipe=nope")


def test_pretrained_init_judges_vectors_against_the_frozen_random_control():
    """Synthetic summaries: fastText frozen far better than the frozen random table at 1%, equal at 100% -> the
    scarce-data claim reproduces, and its gain shrinks with data."""
    import numpy as np

    from research.studies.report import group

    from .test_sweep_report import _summary_with_documents

    module = load_experiment(Path("experiments/pretrained_init.py"))
    rng = np.random.default_rng(0)
    doc_bytes = [int(x) for x in rng.integers(100, 400, 12)]
    factor = {("fasttext_frozen", "0.01"): 2.0, ("random_frozen", "0.01"): 3.0}
    rows = [
        {"knobs": {"fraction": f, "init": init, "seed": "0"},
         "summary": _summary_with_documents(
             [b * factor.get((init, f), 1.5) * rng.uniform(0.95, 1.05) for b in doc_bytes], doc_bytes, "test/len_64")}
        for f in ("0.01", "1.0") for init in ("fasttext_frozen", "random_frozen")
    ]  # fmt: skip
    judged = {claim.claim: (claim, est) for claim, est in module.verdicts(group(rows))}
    assert len(judged) == 2  # word2vec has no runs here: its claim is left out
    from research.studies.verdicts import judge

    assert [judge(c, e) for c, e in judged.values()] == ["reproduces", "reproduces"]


def test_char_word_judges_each_design_against_the_word_control_with_its_readout():
    """Synthetic summaries with per-document bucket totals: char_cnn (untied readout) is judged against
    word_untied, the gate (tied) against the tied word table; a design better after unknown words reproduces,
    one equal to its control is inconclusive, and the intervals come from the bucket totals."""
    import numpy as np

    from research.studies.report import group
    from research.studies.verdicts import judge

    from .test_sweep_report import _summary_with_documents

    module = load_experiment(Path("experiments/char_word.py"))
    rng = np.random.default_rng(0)
    doc_bytes = [int(x) for x in rng.integers(100, 400, 8)]
    after_oov = {"word": 5.0, "word_untied": 5.0, "char_cnn": 4.0, "word_char_gate": 5.0}  # nats per target

    counts, noise = rng.integers(20, 60, 8), rng.uniform(0.9, 1.1, 8)  # per test document, the same for all

    def summary(design):
        out = _summary_with_documents([b * 1.7 for b in doc_bytes], doc_bytes, "test/len_64")
        rows = [[n, n * after_oov[design] * e / np.log(2)] for n, e in zip(counts, noise, strict=True)]
        loss = sum(x for _, x in rows) * np.log(2) / sum(n for n, _ in rows)
        out["metrics"]["test/len_64/loss_after/oov"] = loss
        out["per_document_buckets"] = {
            "test/len_64": {"loss_after/oov": [[int(n), float(x)] for n, x in rows]}
        }
        out["config"] = {
            "data": {"seq_len": 64, "batch_size": 16, "train_fraction": 0.25},
            "train": {"steps": 400},
        }
        out["tokens"] = {"train": 400 * 16 * 64 // 3}
        return out

    rows = [{"knobs": {"embedding": d, "seed": "0"}, "summary": summary(d)} for d in after_oov]
    judged = {
        c.quantity.split(",")[0]: (c, e)
        for c, e in module.verdicts(group(rows))
        if "loss_after/oov" in c.quantity
    }
    assert set(judged) == {"char_cnn minus word_untied", "word_char_gate minus word"}
    claim, est = judged["char_cnn minus word_untied"]
    assert judge(claim, est) == "reproduces" and est.lo < est.mean < est.hi < 0
    assert "fair,quarter" in claim.command and "3.0 epochs of 25%" in claim.setup
    assert judge(*judged["word_char_gate minus word"]) == "inconclusive at this scale"


def test_tokenizer_granularity_judges_unigram_against_bpe_on_whole_split_runs_only():
    """Bostrom & Durrett's claim is judged on runs that score every test document, never on a capped sample; the
    row names the comparison (bytes matched when the tokenizers trained different steps)."""
    from research.studies.report import group
    from research.studies.verdicts import judge

    from .test_sweep_report import _summary_with_documents

    module = load_experiment(Path("experiments/tokenizer_granularity.py"))
    doc_bytes = [100, 250, 180, 320, 150, 210, 90]

    def rows(cap, unigram_steps=301):
        out = []
        for name, factor in (("bpe4k", 2.8), ("unigram4k", 2.7)):
            summary = _summary_with_documents([b * factor * (1 + i % 3 / 50) for i, b in enumerate(doc_bytes)],
                                              doc_bytes, "test/len_128")  # fmt: skip
            steps = unigram_steps if name == "unigram4k" else 300
            summary["config"] = {"data": {"max_eval_bytes": cap}, "train": {"steps": steps}}
            out.append({"knobs": {"seed": "0", "tokenizer": name}, "summary": summary})
        return out

    ((claim, est),) = module.verdicts(group(rows(None)))
    assert judge(claim, est) == "reproduces" and "bytes_matched" in claim.command
    ((claim, _),) = module.verdicts(group(rows(None, unigram_steps=300)))
    assert "same tokens read" in claim.setup and "bytes_matched" not in claim.command
    assert module.verdicts(group(rows(60_000))) == []


def test_the_learning_rate_grid_picks_each_schemes_rate_on_the_valid_split():
    """Synthetic summaries: rope's valid loss is lowest at 2e-3, alibi's at 1.2e-2 (and its 6e-3 test is worse) ->
    each is reported at its own rate, and the ranking at 8L changes with it."""
    import numpy as np

    from research.studies.report import group

    from .test_sweep_report import _summary_with_documents

    module = load_experiment(Path("experiments/pe_extrapolation.py"))
    rng = np.random.default_rng(0)
    doc_bytes = [int(x) for x in rng.integers(100, 400, 12)]
    valid = {
        ("rope", 0.002): 1.0,
        ("rope", 0.006): 1.2,
        ("rope", 0.012): 1.3,
        ("alibi", 0.002): 1.4,
        ("alibi", 0.006): 1.2,
        ("alibi", 0.012): 0.9,
    }
    test = {("rope", 0.002): 2.0, ("alibi", 0.012): 1.8, ("alibi", 0.006): 2.4}  # bits per byte, else 2.2
    rows = []
    for (scheme, lr), loss in valid.items():
        summary = {}
        for length in (64, 512):
            bits = [b * test.get((scheme, lr), 2.2) * rng.uniform(0.98, 1.02) for b in doc_bytes]
            part = _summary_with_documents(bits, doc_bytes, f"test/len_{length}")
            summary = {
                **part,
                **summary,
                "metrics": {**part["metrics"], **summary.get("metrics", {})},
                "per_document": {**part["per_document"], **summary.get("per_document", {})},
            }
        summary["valid"] = {"valid/loss": loss}
        rows.append({"knobs": {"positional": scheme, "lr": str(lr), "seed": "0"}, "summary": summary})
    lines = module.headline(group(rows))
    assert "rope 0.002 (valid loss 0.002: 1.000" in lines[0] and "alibi 0.012 (valid loss" in lines[0]
    assert lines[1].startswith("- **Ranking at 512 tokens at each scheme's own rate**: alibi 1.8")
    assert lines[2].startswith("- **Ranking at 512 tokens at the shared 0.006**: rope 2.1")
    judged = {c.claim: c.setup for c, _ in module.verdicts(group(rows))}  # at each scheme's picked rate
    assert len(judged) == 2 and all("lr_grid" in setup for setup in judged.values())


def test_equal_parameter_budgets_match_the_plain_table_within_4_percent():
    module = load_experiment(Path("experiments/embedding_size.py"))
    base = module.get_config("equal_params")
    vocab = base.data.tokenizer["vocab_size"]
    budget = module.parameter_count(base, vocab)
    assert budget == 1_115_008
    for e in module.EQUAL_WIDTHS:
        d = module.matched_d_model(e, base)
        config = module.get_config(f"equal_params,embed_dim={e},d_model={d}")
        assert d % 8 == 0 and abs(module.parameter_count(config, vocab) / budget - 1) < 0.04, (e, d)


def test_the_equal_budget_headline_pairs_each_width_with_the_table():
    import numpy as np

    from research.studies.report import group

    from .test_sweep_report import _summary_with_documents

    module = load_experiment(Path("experiments/embedding_size.py"))
    rng = np.random.default_rng(1)
    doc_bytes = [int(x) for x in rng.integers(100, 400, 10)]
    rows = []
    for e, d, bpb in ((0, 128, 3.0), (16, 168, 2.9), (64, 152, 3.1)):
        summary = _summary_with_documents([b * bpb * rng.uniform(0.99, 1.01) for b in doc_bytes], doc_bytes,
                                          "test/len_128")  # fmt: skip
        summary["params"] = {"total": 1_100_000 + e}
        rows.append({"knobs": {"embed_dim": str(e), "d_model": str(d), "seed": "0"}, "summary": summary})
    (line,) = module.headline(group(rows))
    assert "E=16 at d_model 168 (1,100,016 parameters) -0.1" in line and "E=64 at d_model 152" in line
    assert module.headline(group(rows[:1])) == []
    # ALBERT's claim is judged at its width ratio (E=16) on the equal-budget pair only
    from research.studies.verdicts import judge

    ((claim, est),) = module.verdicts(group(rows))
    assert "E=16 at d_model 168" in claim.setup and judge(claim, est) == "reproduces"
    assert module.verdicts(group([rows[0], rows[2]])) == []


def test_tokenizers_matched_on_bytes_read_the_same_bytes():
    module = load_experiment(Path("experiments/tokenizer_granularity.py"))
    budget = module.STEPS * module.BATCH * module.SEQ_LEN / module.tokens_per_byte("bpe4k")
    for name in module.TOKENIZERS:
        config = module.get_config(f"bytes_matched,tokenizer={name}")
        read = config.train.steps * module.BATCH * module.SEQ_LEN / module.tokens_per_byte(name)
        assert abs(read / budget - 1) < 0.005, name  # within one step's rounding
        assert config.data.max_eval_bytes is None
    assert module.get_config("bytes_matched,tokenizer=bpe4k").train.steps == module.STEPS
    with pytest.raises(ValueError, match="bytes_matched"):
        module.get_config("bytes_matched,corpus=/tmp/x.txt")


def test_the_fine_tune_regime_pretrains_longer_and_fine_tunes_a_few_percent():
    module = load_experiment(Path("experiments/rope_scaling.py"))
    base = module.get_config("regime,stage=base")
    tune = module.get_config("regime,stage=finetune,method=yarn_derived")
    assert base.train.steps == 2000 and tune.train.steps == 50 and tune.train.init_from == "stage=base"
    assert tune.model.positional["scaling"] == {
        "name": "yarn", "factor": 4.0, "beta_fast": 2.0, "beta_slow": 1.0, "original_max_len": 64
    }  # fmt: skip
    assert base.data.max_eval_bytes is None and module.get_config("stage=base").train.steps == 500


def test_length_generalization_judges_only_runs_past_the_in_distribution_gate():
    """until_gate: Ruoss et al. compare a randomized run evaluated with random positions against the contiguous
    run, Kazemnejad et al. NoPE against each scheme; a comparison with a run below the gate is not judged but
    listed; the intervals come from the per-example counts."""
    import numpy as np

    from research.studies.report import group

    module = load_experiment(Path("experiments/length_generalization.py"))
    rng = np.random.default_rng(0)
    examples, lengths = 32, range(1, module.EVAL_MAX + 1)

    def summary(in_dist, ood, eval_mode="contiguous", positions="contiguous"):
        per_example = {}
        for n in lengths:
            right = rng.random((examples, n)) < (in_dist if n <= module.TRAIN_MAX else ood)
            counts = [int(x) for x in right.sum(1)]
            per_example[f"len_{n}"] = {"total": [n] * examples, "teacher": counts, "free": counts}
        metrics = {
            "test/in_dist/free_sequence_accuracy": 1.0 if in_dist == 1.0 else 0.0,
            "test/ood/free_token_accuracy": ood,
        }
        config = {
            "train": {
                "steps": module.UNTIL_GATE_STEPS,
                "stop_when": "valid/in_dist/free_sequence_accuracy>=0.9",
            },
            "task": {"train_max_length": module.TRAIN_MAX},
            "model": {"positions": {"name": positions, "eval_mode": eval_mode}},
        }
        return {"metrics": metrics, "per_example": per_example, "config": config, "stopped_at": 900}

    runs = {  # (positional, positions): summary
        ("nope", "contiguous"): summary(1.0, 0.8),
        ("rope", "contiguous"): summary(1.0, 0.5),
        ("rope", "randomized"): summary(1.0, 0.7, "randomized", "randomized"),
        ("alibi", "contiguous"): summary(0.5, 0.6),  # below the gate
    }
    rows = [
        {"knobs": {"task": "reverse_string", "positional": p, "positions": s, "seed": "0"}, "summary": v}
        for (p, s), v in runs.items()
    ]
    groups = group(rows)
    judged = {c.quantity.split(",")[0]: (c, e) for c, e in module.verdicts(groups)}
    assert set(judged) == {"rope: randomized (random test positions) minus contiguous", "NoPE minus rope"}
    for quantity, (claim, est) in judged.items():
        assert est.lo is not None and 0.1 < est.lo < est.mean < est.hi, quantity  # 0.2 and 0.3 apart
        assert "until_gate,small" in claim.command
    lines = "\n".join(module.until_gate_lines(groups))
    assert "NoPE minus alibi, contiguous positions (reverse_string)" in lines
    assert "Steps until the gate" in lines
    assert "Seed by seed" not in lines  # one seed: nothing to add to the intervals
    second = [{**r, "knobs": {**r["knobs"], "seed": "1"}} for r in rows]
    second[0]["summary"] = {**second[0]["summary"], "metrics": {**runs[("nope", "contiguous")]["metrics"]}}
    second[0]["summary"]["metrics"]["test/ood/free_token_accuracy"] = 0.4  # NoPE's seed 1 generalises worse
    lines = "\n".join(module.until_gate_lines(group(rows + second)))
    assert "reverse_string, NoPE minus rope: +0.300, -0.100" in lines
    claim, _ = module.verdicts(group(rows + second))[0]
    assert claim.command.endswith(
        "until_gate --only task=reverse_string --only seed=0 --only seed=1 --jobs 2"
    )
    assert (
        "reverse_string, rope: randomized (random test positions) minus contiguous: +0.200, +0.200" in lines
    )
