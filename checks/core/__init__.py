"""The engine's ground floor: values, the finding catalog, errors, settings,
what DNS said, and pure helpers (names, text, URLs, the target policy, child
processes for CPU-heavy work). Imports nothing else of the engine."""
