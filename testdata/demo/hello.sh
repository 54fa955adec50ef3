#!/bin/sh
# The demo application: prints who and where it runs.
echo "hello from hoist: $(uname -s), user $(id -u), in $(pwd)"
