#!/usr/bin/env bash
# RSS per idle h2c connection, luring against nginx: benches/idle.sh --h2.
# usage: bash benches/idle-h2.sh [--bin PATH] [--connections N]   (default 1000)
exec bash "$(dirname "$0")/idle.sh" --h2 "$@"
