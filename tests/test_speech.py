"""Speech engines and timings for real: espeak-ng and piper run as separate processes, pocketsphinx aligns
their words; the `speech` task through a real worker caches by content."""

from __future__ import annotations

import json

import pytest

from source.speech.engines import get_engine
from source.speech.timings import timings, wav_info
from source.store.task_store import TaskStore
from source.task_context import InvalidInput
from tests.worker_process import WorkerProcess

TEXT = "The quick brown fox jumps over the lazy dog. Then it sleeps."


@pytest.mark.parametrize("engine", ["espeak", "piper"])
def test_engine_speaks_and_words_are_aligned(tmp_path, engine):
    e = get_engine(engine)
    wav = tmp_path / "s.wav"
    e.synthesize(TEXT, e.check_voice(None), 1.0, wav)
    duration, rate = wav_info(wav)
    assert 2.0 < duration < 8.0 and rate > 8000
    rec = timings(TEXT, wav, None, "en")
    assert rec["timing_method"] == "alignment"
    assert [w["word"] for w in rec["words"]][:3] == ["the", "quick", "brown"] and len(rec["words"]) == 12
    starts = [w["start"] for w in rec["words"]]
    assert starts == sorted(starts) and rec["words"][-1]["end"] <= duration + 0.01
    assert [s["text"] for s in rec["sentences"]] == ["The quick brown fox jumps over the lazy dog.", "Then it sleeps."]
    assert rec["sentences"][0]["end"] <= rec["sentences"][1]["start"]


def test_faster_rate_is_shorter(tmp_path):
    e = get_engine("espeak")
    e.synthesize(TEXT, "en-us", 1.0, tmp_path / "a.wav")
    e.synthesize(TEXT, "en-us", 2.0, tmp_path / "b.wav")
    assert wav_info(tmp_path / "b.wav")[0] < 0.7 * wav_info(tmp_path / "a.wav")[0]


def test_unknown_words_fall_back_to_sentences(tmp_path):
    e = get_engine("espeak")
    text = "Zzxqv blorptang. Hello."
    e.synthesize(text, "en-us", 1.0, tmp_path / "a.wav")
    rec = timings(text, tmp_path / "a.wav", None, "en")
    assert rec["timing_method"] == "sentences" and rec["words"] == [] and len(rec["sentences"]) == 2
    assert 0 <= rec["speech_start"] < rec["sentences"][1]["start"] < rec["speech_end"] <= rec["duration"]


def test_bad_voice_and_engine_are_invalid_input():
    with pytest.raises(InvalidInput, match="voice"):
        get_engine("espeak").check_voice("en; rm -rf /")
    with pytest.raises(InvalidInput, match="unknown speech engine"):
        get_engine("nope")
    with pytest.raises(InvalidInput, match="unknown piper voice"):
        get_engine("piper").check_voice("nobody")


def test_speech_task_is_cached_by_content(db_url, tmp_path):
    store = TaskStore(db_url)
    ids = [store.add_task("speech", {"text": "Hello from the queue.", "engine": "espeak"}) for _ in range(2)]
    other = store.add_task("speech", {"text": "Hello from the queue.", "engine": "espeak", "speaking_rate": 1.5})
    w = WorkerProcess(db_url, tmp_path / "logs", "--exit-when-idle", "--poll-interval", "0.2", "--output-dir",
                      str(tmp_path / "outputs"), worker_id="s0")
    assert w.wait(120) == 0, w.stderr_tail()
    rows = [store.get(i) for i in (*ids, other)]
    assert all(r["status"] == "Complete" for r in rows), [r["error_message"] for r in rows]
    results = [r["result"] if isinstance(r["result"], dict) else json.loads(r["result"]) for r in rows]
    assert [r["cache_hit"] for r in results] == [False, True, False]
    assert results[0]["duration"] == results[1]["duration"] > results[2]["duration"]
    assert results[0]["words"] and results[0]["real_time_factor"] > 0
    store.close()
