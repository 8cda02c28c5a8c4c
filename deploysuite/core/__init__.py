"""The suite's ground: commands as data, the one runner, events, errors, SSH transport."""
