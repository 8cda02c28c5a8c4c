#!/bin/sh
# `docker run IMAGE migrate` -> python -m <package> migrate; the package comes from the image.
set -eu
exec python3 -m "${SERVICE_PACKAGE:?SERVICE_PACKAGE is set by the image}" "$@"
