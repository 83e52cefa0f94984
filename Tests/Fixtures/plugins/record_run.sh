#!/bin/sh
# A one-shot plugin that appends "start <ns> <pid>" and "end <ns> <pid>" (nanoseconds since
# 1970) to the file named by its first argument, sleeping its second argument (seconds) in
# between: tests of concurrency caps read the file to count the runs that overlapped.
log="$1"
cat > /dev/null
echo "start $(date +%s%N) $$" >> "$log"
sleep "$2"
echo "end $(date +%s%N) $$" >> "$log"
echo '{"result": "ran"}'
