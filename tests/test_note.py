"""The verdict in markdown: the sweep's parent run's description in the MLflow UI."""

from __future__ import annotations

from smsweep.report.note import NOTE_LIMIT, verdict_note
from smsweep.verdict.stats import ArmRun, judge


def _verdict(configurations: int = 2, repeats: int = 3):
    runs = [
        ArmRun("control:none", "", "none", repeat, 0.30 + 0.01 * repeat)
        for repeat in range(repeats)
    ]
    for number in range(1, configurations + 1):
        label = f"strategy=selective ratio={0.4 + number / 100:.2f}"
        runs += [
            ArmRun(f"config-{number}", label, None, repeat, 0.35 + 0.002 * number + 0.01 * repeat)
            for repeat in range(repeats)
        ]
    return judge(runs, "miou")


def test_the_note_holds_the_sentences_and_one_row_per_arm():
    verdict = _verdict()
    note = verdict_note(verdict, "miou (last validation)")
    lines = note.splitlines()
    assert lines[0] == "### Verdict: miou (last validation)"
    for sentence in verdict.sentences():
        assert f"- {sentence}"[:40] in note.replace("\\", "")
    header = next(line for line in lines if line.startswith("| arm |"))
    assert header == "| arm | what | n | mean | 95% interval | vs control none, points |"
    rows = [line for line in lines if line.startswith("| config-") or line.startswith("| control")]
    assert [row.split(" | ")[0] for row in rows] == ["| config-2", "| config-1", "| control none"]
    best = verdict.configurations[0]
    low, high = best.interval.low, best.interval.high
    assert f"| 3 | {best.interval.mean:.3f} | \\[{low:.3f}, {high:.3f}\\] |" in rows[0]
    difference = verdict.vs_controls[("config-2", "none")].difference.show_points()
    assert rows[0].endswith(difference.replace("[", "\\[").replace("]", "\\]") + " |")
    assert "stopped before its last trial" not in note
    assert "stopped before its last trial" in verdict_note(verdict, "miou", interrupted=True)


def test_markup_in_a_label_is_shown_as_written():
    runs = [ArmRun("config-1", "loss=a|b *x* _y_", None, r, 0.3 + r / 100) for r in range(2)]
    note = verdict_note(judge(runs, "miou"), "miou")
    assert "| config-1 | loss=a\\|b \\*x\\* \\_y\\_ | 2 |" in note


def test_a_long_table_keeps_the_best_configurations_and_the_controls_and_counts_the_rest():
    verdict = _verdict(configurations=70)
    note = verdict_note(verdict, "miou")
    assert len(note) <= NOTE_LIMIT
    assert "| control none |" in note and f"| {verdict.configurations[0].key} |" in note
    shown = sum(line.startswith("| config-") for line in note.splitlines())
    assert 10 < shown < 70
    assert f"| … {70 - shown} more configurations |" in note
    assert note.endswith(f"- {verdict.sentences()[-1]}".replace("[", "\\[").replace("]", "\\]"))
