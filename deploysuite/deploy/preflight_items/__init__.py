"""The deployment checklist made executable: the item registry (registry.py), the pure
evaluators that judge what was read (evaluate.py), the checks that read it (checks.py) and the
records of drills and alert tests they look for (records.py). `inv preflight` runs it."""
