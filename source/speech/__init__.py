"""Speech: text-to-speech engines (engines.py) and word/sentence timings (timings.py) for the `speech` task."""
