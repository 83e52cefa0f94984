#!/bin/sh
# A one-shot plugin that runs until a signal comes, and writes the signal's name to the file
# named by its first argument (tests of revoke(terminate=True, signal=...)).
marker="$1"
trap 'echo USR1 >> "$marker"; exit 3' USR1
trap 'echo TERM >> "$marker"; exit 4' TERM
echo started >> "$marker"
sleep 30 &
wait $!
echo '{"result": "not signalled"}'
