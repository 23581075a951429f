#!/usr/bin/env bash
# The package as an operator meets it, on this machine (run as root; CI runs it from .ci/run):
# build it, lintian, dpkg -i, the unit verified, the installed binary started exactly as the
# unit's ExecStart starts it, man pages and completions, then remove and purge and what is left.
# It installs the package for real: do not run it on a host whose /etc/agent you care about.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
step() { echo "test-deb: $*" >&2; }

[[ $(id -u) == 0 ]] || fail "run as root: it installs the package"
if dpkg-query -W -f='${Status}' agent 2>/dev/null | grep -q 'install ok installed'; then
  fail "a package named agent is already installed; this test would replace it"
fi

# What this test uses beyond the build: lintian, man (man-db), systemd-analyze (systemd),
# readelf (binutils), curl.
need=()
for p in lintian man-db systemd binutils curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  step "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

deb=$(packaging/build-deb.sh)
[[ -f $deb ]] || fail "no package built ($deb)"
step "built $deb ($(du -h "$deb" | cut -f1))"

step "lintian"
# Errors and warnings fail. One tag is suppressed (docs/operations.md, "Lintian"):
# initial-upload-closes-no-bugs is about uploads to Debian's archive (an ITP bug), which this is not.
lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs "$deb" \
  || fail "lintian reports problems"

step "dpkg -i"
dpkg -i "$deb" >/dev/null
for f in /usr/bin/agent /usr/bin/agentctl /etc/agent/agent.toml /etc/agent/registry.toml \
  /lib/systemd/system/agent.service /usr/share/man/man1/agent.1.gz \
  /usr/share/man/man1/agentctl-fleet.1.gz /usr/share/bash-completion/completions/agentctl; do
  [[ -e $f ]] || fail "$f is not installed"
done
! readelf -S /usr/bin/agent | grep -q '\.debug_info' || fail "/usr/bin/agent carries debug info"
step "agent is $(du -h /usr/bin/agent | cut -f1), agentctl $(du -h /usr/bin/agentctl | cut -f1)"

step "systemd-analyze verify"
systemd-analyze verify /lib/systemd/system/agent.service || fail "the unit does not verify"
# The exposure score docs/operations.md gives (3.6); more than 4.0 means hardening was lost.
exposure=$(systemd-analyze security --offline=true /lib/systemd/system/agent.service 2>/dev/null \
  | sed -n 's/.*Overall exposure level for agent.service: \([0-9.]*\).*/\1/p')
step "systemd-analyze security: exposure $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e <= 4.0) }' || fail "exposure ${exposure:-unknown} is above 4.0"

step "ExecStartPre and ExecStart as the unit runs them"
unit=/lib/systemd/system/agent.service
pre=$(sed -n 's/^ExecStartPre=//p' $unit)
start=$(sed -n 's/^ExecStart=//p' $unit)
$pre >/dev/null || fail "ExecStartPre failed: $pre"
mkdir -p /var/lib/agent /var/log/agent && chmod 700 /var/lib/agent /var/log/agent
$start >/tmp/test-deb.agent.log 2>&1 &
pid=$!
up=
for _ in $(seq 100); do
  if curl -fsS 127.0.0.1:1232/me/status >/dev/null 2>&1; then up=1; break; fi
  sleep 0.1
done
[[ -n $up ]] || { cat /tmp/test-deb.agent.log >&2; kill $pid 2>/dev/null; fail "the installed agent did not answer"; }
agentctl --token-file /var/lib/agent/auth_token ns | grep -q host.local || { kill $pid; fail "agentctl ns does not show host.local"; }
[[ -s /var/log/agent/agent.log ]] || ls /var/log/agent/ | grep -q . || { kill $pid; fail "nothing logged in /var/log/agent"; }
kill -TERM $pid; wait $pid || fail "the agent did not exit cleanly on TERM"

step "man pages and completions"
for page in agent agent-start agentctl agentctl-fleet; do
  MANWIDTH=80 man -l /usr/share/man/man1/$page.1.gz 2>&1 >/dev/null | grep . && fail "man -l $page prints warnings"
  MANWIDTH=80 man -l /usr/share/man/man1/$page.1.gz | grep -q "^NAME" || fail "man page $page has no NAME"
done
bash -c 'source /usr/share/bash-completion/completions/agentctl && complete -p agentctl' >/dev/null \
  || fail "the bash completion does not load"
if command -v fish >/dev/null; then fish -n /usr/share/fish/vendor_completions.d/agentctl.fish || fail fish; fi
if command -v zsh >/dev/null; then zsh -n /usr/share/zsh/vendor-completions/_agentctl || fail zsh; fi

step "dpkg -r: the binaries go, the data and the config stay"
dpkg -r agent >/dev/null
[[ ! -e /usr/bin/agent ]] || fail "/usr/bin/agent is left after remove"
[[ -f /var/lib/agent/auth_token ]] || fail "remove deleted the data"
[[ -f /etc/agent/agent.toml ]] || fail "remove deleted the conffiles"

step "dpkg -P: nothing is left"
dpkg -P agent >/dev/null
for left in /etc/agent /var/lib/agent /var/log/agent /lib/systemd/system/agent.service; do
  [[ ! -e $left ]] || fail "$left is left after purge"
done
step "ok"
