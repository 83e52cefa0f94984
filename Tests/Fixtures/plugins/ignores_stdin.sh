#!/bin/sh
# A plugin that exits at once without reading its request (issue 9, point 1).
echo "ignores_stdin: not reading the request" >&2
exec sleep 0
