#!/bin/sh
# What a workspace image's entrypoint script becomes with the agent: no socat bridge (the agent
# listens on TCP, or on the Unix socket itself in the local Docker mode), only preparation, then
# `exec`, so the agent takes this process's place as PID 1 and receives SIGTERM itself.
# Use it only when the image must prepare the workspace first; otherwise set
# ENTRYPOINT ["/usr/local/bin/workspace-agent"] directly.
set -eu

workspace="${AGENT_WORKSPACE_ROOT:-/workspace}"
skeleton="${WORKSPACE_SKELETON:-/etc/workspace-skel}"

# The workspace volume (an emptyDir) starts empty: seed it with the image's starter files once.
if [ -d "$skeleton" ] && [ -d "$workspace" ] && [ -z "$(ls -A "$workspace")" ]; then
  cp -R "$skeleton"/. "$workspace"/
fi

# Local Docker mode: the socket lives in a mounted directory that may not exist yet.
if [ "${AGENT_LISTEN_MODE:-tcp}" = uds ]; then
  mkdir -p "$(dirname "${AGENT_SOCKET:-/var/run/workspace-sandbox/agent.sock}")"
fi

exec "${WORKSPACE_AGENT_BIN:-/usr/local/bin/workspace-agent}" "$@"
