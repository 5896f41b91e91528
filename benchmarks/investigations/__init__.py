"""One-off investigations behind the journal (docs/benchmarks-journal.md), kept runnable."""
