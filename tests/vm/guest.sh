#!/bin/sh
# Runs inside the VM started by tests/vm/run (as root, PID 1 is virtme-ng-init). $1 is the results directory;
# $1/args holds: repo, venv, collections path, mode (pytest|script), then that mode's arguments.
results=$1
echo booted > "$results/booted"
{ read -r repo; read -r venv; read -r collections; read -r mode; } < "$results/args"
tail -n +5 "$results/args" > "$results/mode-args"

# The host filesystem is read-only here: HOME, TMPDIR and Ansible's temp dirs go to a fresh tmpfs.
scratch=/run/kb-vm
mkdir -p "$scratch" && mount -t tmpfs -o mode=0755 kb-vm "$scratch"
mkdir -p "$scratch/home" "$scratch/tmp" "$scratch/ansible"
export HOME="$scratch/home" TMPDIR="$scratch/tmp" ANSIBLE_HOME="$scratch/ansible" \
       ANSIBLE_LOCAL_TEMP="$scratch/ansible/tmp" ANSIBLE_REMOTE_TMP="$scratch/ansible/remote" \
       ANSIBLE_PIPELINING=1 PYTHONDONTWRITEBYTECODE=1 KB_VENV="$venv" KB_COLLECTIONS_PATH="$collections" KB_VM=1 \
       KB_VM_RESULTS="$results" KB_VM_SCRATCH="$scratch" PATH="$venv/bin:/usr/sbin:/usr/bin:/sbin:/bin"
cd "$repo" || { echo 2 > "$results/status"; exit 0; }

# One argument per line (xargs -d '\n' would do it too; a loop keeps it POSIX).
set --
while IFS= read -r arg; do set -- "$@" "$arg"; done < "$results/mode-args"

if [ "$mode" = script ]; then
  "$venv/bin/python" "$@" > "$results/output.log" 2>&1
else
  "$venv/bin/pytest" -p no:cacheprovider -o junit_family=xunit1 -v -rfE --durations=0 --junitxml="$results/junit.xml" tests/vm "$@" \
    > "$results/output.log" 2>&1
fi
echo $? > "$results/status"
