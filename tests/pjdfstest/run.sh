#!/usr/bin/env bash
# Run pjdfstest (the Rust rewrite, crates.io `pjdfstest`) on a directory.
#
# Usage: tests/pjdfstest/run.sh [OPTIONS] MOUNTPOINT [PATTERN...]
#
# MOUNTPOINT   directory to test in (normally the root of a Strata FUSE mount).
#              pjdfstest creates and removes a .tmpXXXXXX directory in it.
# PATTERN...   optional: run only tests whose name contains one of PATTERNs
#              (same matching as pjdfstest's own filter), e.g. `chmod rename::`.
#
# Options:
#   -c, --config FILE        pjdfstest config (default: tests/pjdfstest/pjdfstest.toml)
#   -x, --excluded FILE      exclusion list; repeatable
#                            (default: tests/pjdfstest/excluded.txt)
#   --secondary-fs auto|none|DIR
#                            directory on ANOTHER file system, for the EXDEV tests
#                            (rename/link across file systems). auto (default):
#                            mount a private 8 MiB tmpfs for the run (root only);
#                            none: no secondary fs (the exdev tests are skipped).
#   --remount auto|yes|no    let pjdfstest remount the file system holding
#                            MOUNTPOINT read-only and back (the EROFS tests).
#                            auto (default): only if that mount is tmpfs/ramfs/FUSE,
#                            is not /, is not a bind mount and its superblock is
#                            mounted only once; yes: always; no: never.
#   --allow-skips            do not count tests skipped by pjdfstest as failures
#                            (default: a skipped, non-excluded test is fatal).
#   --timeout SECS           kill a pjdfstest process after SECS (default: 900;
#                            there are up to three: the name listing, the EROFS
#                            tests, the rest); tests without a result then fail
#   --log FILE               keep pjdfstest's full output here (default: temp file,
#                            kept and printed path on failure)
#   --pjdfstest BIN          binary to use (default: $PJDFSTEST, else pjdfstest in
#                            PATH, else the install.sh location; installed with
#                            install.sh if missing)
#   --list                   print the test names (marking excluded ones) and exit
#   -v, --verbose            also stream pjdfstest's output
#   -h, --help               this help
#
# Exit status: 0 only if every selected, non-excluded test passed; 1 if a test
# failed, was skipped (without --allow-skips) or did not run (crash/timeout);
# 2 on a usage or setup error. The last line is "pjdfstest: N passed, N failed,
# N skipped".
#
# Needs root for full coverage: pjdfstest switches to the users listed in the
# config ([dummy_auth]), creates device nodes, chowns, mounts (rmdir tests).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PINNED_VERSION="${PJDFSTEST_VERSION:-0.2.2}"

CONFIG="$HERE/pjdfstest.toml"
EXCLUDED_FILES=()
SECONDARY="auto"
REMOUNT="auto"
ALLOW_SKIPS=0
TIMEOUT=900
LOG=""
BIN="${PJDFSTEST:-}"
LIST_ONLY=0
VERBOSE=0
MOUNTPOINT=""
PATTERNS=()

die() { echo "run.sh: error: $*" >&2; exit 2; }
warn() { echo "run.sh: warning: $*" >&2; }
info() { echo "run.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
    case "$1" in
        -c|--config) CONFIG="${2:?}"; shift 2 ;;
        -x|--excluded) EXCLUDED_FILES+=("${2:?}"); shift 2 ;;
        --secondary-fs) SECONDARY="${2:?}"; shift 2 ;;
        --remount) REMOUNT="${2:?}"; shift 2 ;;
        --allow-skips) ALLOW_SKIPS=1; shift ;;
        --timeout) TIMEOUT="${2:?}"; shift 2 ;;
        --log) LOG="${2:?}"; shift 2 ;;
        --pjdfstest) BIN="${2:?}"; shift 2 ;;
        --list) LIST_ONLY=1; shift ;;
        -v|--verbose) VERBOSE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) if [[ -z "$MOUNTPOINT" ]]; then MOUNTPOINT="$1"; else PATTERNS+=("$1"); fi; shift ;;
    esac
done
while (($#)); do
    if [[ -z "$MOUNTPOINT" ]]; then MOUNTPOINT="$1"; else PATTERNS+=("$1"); fi
    shift
done
((${#EXCLUDED_FILES[@]})) || EXCLUDED_FILES=("$HERE/excluded.txt")
[[ "$REMOUNT" =~ ^(auto|yes|no)$ ]] || die "--remount must be auto, yes or no"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[[ -f "$CONFIG" ]] || die "config $CONFIG not found"
for f in "${EXCLUDED_FILES[@]}"; do [[ -f "$f" ]] || die "exclusion list $f not found"; done
if ((!LIST_ONLY)); then
    [[ -n "$MOUNTPOINT" ]] || { usage >&2; die "MOUNTPOINT is required"; }
    [[ -d "$MOUNTPOINT" ]] || die "$MOUNTPOINT is not a directory"
    MOUNTPOINT="$(realpath "$MOUNTPOINT")"
fi
if grep -Eq '^[[:space:]]*(allow_remount|expected_failures)[[:space:]]*=' "$CONFIG"; then
    die "$CONFIG must not set allow_remount (use --remount) or expected_failures (use excluded.txt)"
fi
grep -Eq '^[[:space:]]*\[settings\][[:space:]]*$' "$CONFIG" || die "$CONFIG needs a [settings] table"

# ---------------------------------------------------------------- the binary
if [[ -z "$BIN" ]]; then
    if command -v pjdfstest >/dev/null 2>&1; then
        BIN="$(command -v pjdfstest)"
    else
        BIN="${PJDFSTEST_ROOT:-${CARGO_TARGET_DIR:-$REPO/target}/pjdfstest-root}/bin/pjdfstest"
        if [[ ! -x "$BIN" ]]; then
            info "pjdfstest not found; installing it with $HERE/install.sh"
            BIN="$("$HERE/install.sh" | tail -n1)"
        fi
    fi
fi
[[ -x "$BIN" ]] || die "pjdfstest binary $BIN is not executable"
VERSION="$("$BIN" --version 2>/dev/null || true)"
[[ "$VERSION" == "pjdfstest $PINNED_VERSION" ]] ||
    warn "using '$VERSION' ($BIN); the config and exclusions were written for pjdfstest $PINNED_VERSION"

# ------------------------------------------------------------- temp + cleanup
WORK="$(mktemp -d "${TMPDIR:-/tmp}/pjdfstest-run.XXXXXX")"
SECONDARY_MNT=""
cleanup() {
    if [[ -n "$SECONDARY_MNT" ]]; then
        umount "$SECONDARY_MNT" 2>/dev/null || umount -l "$SECONDARY_MNT" 2>/dev/null || true
        rmdir "$SECONDARY_MNT" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------ users for dummy_auth
# pjdfstest refuses to start if a [dummy_auth] user or group does not exist.
IS_ROOT=0; [[ "$(id -u)" == 0 ]] && IS_ROOT=1
while read -r user group; do
    [[ -n "$user" ]] || continue
    if ! getent group "$group" >/dev/null; then
        ((IS_ROOT)) || die "group '$group' (from $CONFIG [dummy_auth]) does not exist; create it as root"
        info "creating group $group for pjdfstest"
        groupadd --system "$group"
    fi
    if ! getent passwd "$user" >/dev/null; then
        ((IS_ROOT)) || die "user '$user' (from $CONFIG [dummy_auth]) does not exist; create it as root"
        info "creating user $user (primary group $group) for pjdfstest"
        useradd --system --gid "$group" --no-create-home --home-dir / --shell /usr/sbin/nologin "$user"
    fi
    [[ "$(id -g "$user")" == "$(getent group "$group" | cut -d: -f3)" ]] ||
        die "user '$user' must have '$group' as primary group (pjdfstest requires it)"
done < <(sed -n '/^\[dummy_auth\]/,/^\[/p' "$CONFIG" | grep -v '^[[:space:]]*#' |
    grep -oE '\[[[:space:]]*"[^"]+"[[:space:]]*,[[:space:]]*"[^"]+"[[:space:]]*\]' |
    sed -E 's/\[[[:space:]]*"([^"]+)"[[:space:]]*,[[:space:]]*"([^"]+)".*/\1 \2/')
((IS_ROOT)) || warn "not running as root: pjdfstest skips every test that needs root (most of them)"

# Config with allow_remount inserted into [settings].
make_config() { # $1 = true|false, $2 = output
    awk -v v="$1" '{ print } /^[[:space:]]*\[settings\][[:space:]]*$/ { print "allow_remount = " v }' \
        "$CONFIG" >"$2"
}

# ------------------------------------------------------------ test names
# pjdfstest has no "list tests" option: every test prints its name and result,
# even when skipped, so run the whole suite once in a private scratch
# directory on local storage (about 1-2 s) and collect the names. This run
# never remounts anything and its results are ignored.
make_config false "$WORK/list.toml"
mkdir "$WORK/scratch"
NO_COLOR=1 RUST_BACKTRACE=0 timeout --kill-after=10 "$TIMEOUT" \
    "$BIN" -c "$WORK/list.toml" -p "$WORK/scratch" >"$WORK/list.out" 2>&1 || true
RESULT_RE='^([A-Za-z0-9_:]+) +(ok|FAILED|skipped|failed as expected|PASSED UNEXPECTEDLY)$'
sed -E 's/\x1b\[[0-9;]*m//g' "$WORK/list.out" | sed -nE "s/$RESULT_RE/\1/p" >"$WORK/all.txt"
if [[ ! -s "$WORK/all.txt" ]]; then
    cat "$WORK/list.out" >&2
    die "could not list the tests (output of the listing run above)"
fi

# ------------------------------------------------------------ exclusions
# Format: "NAME  # reason" per line; NAME is an exact test name or a shell
# glob (e.g. chflags::*). Blank lines and lines starting with # are ignored.
: >"$WORK/excl.txt"
for f in "${EXCLUDED_FILES[@]}"; do
    lineno=0
    while IFS= read -r line || [[ -n "$line" ]]; do
        lineno=$((lineno + 1))
        [[ "$line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
        [[ "$line" =~ ^[[:space:]]*([^[:space:]#]+)[[:space:]]+#[[:space:]]*([^[:space:]].*)$ ]] ||
            die "$f:$lineno: expected 'TEST_NAME  # reason', got: $line"
        printf '%s\t%s\n' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" >>"$WORK/excl.txt"
    done <"$f"
done
declare -A EXCLUDED_BY=()
while IFS=$'\t' read -r pat reason; do
    matched=0
    while IFS= read -r name; do
        # shellcheck disable=SC2053 # glob match on purpose
        if [[ "$name" == $pat ]]; then
            matched=1
            [[ -n "${EXCLUDED_BY[$name]:-}" ]] || EXCLUDED_BY[$name]="$reason"
        fi
    done <"$WORK/all.txt"
    ((matched)) || warn "exclusion '$pat' matches no pjdfstest test (stale entry?)"
done <"$WORK/excl.txt"

if ((LIST_ONLY)); then
    while IFS= read -r name; do
        if [[ -n "${EXCLUDED_BY[$name]:-}" ]]; then
            printf '%-60s excluded: %s\n' "$name" "${EXCLUDED_BY[$name]}"
        else
            echo "$name"
        fi
    done < <(sort "$WORK/all.txt")
    exit 0
fi

SELECTED=()
N_EXCLUDED=0
while IFS= read -r name; do
    if ((${#PATTERNS[@]})); then
        hit=0
        for p in "${PATTERNS[@]}"; do [[ "$name" == *"$p"* ]] && { hit=1; break; }; done
        ((hit)) || continue
    fi
    if [[ -n "${EXCLUDED_BY[$name]:-}" ]]; then
        N_EXCLUDED=$((N_EXCLUDED + 1))
    else
        SELECTED+=("$name")
    fi
done <"$WORK/all.txt"
((${#SELECTED[@]})) || die "no test selected (patterns: ${PATTERNS[*]:-none}; $N_EXCLUDED excluded)"

# ------------------------------------------------------------ the target
read -r MNT_TARGET MNT_FSTYPE MNT_FSROOT MNT_DEV < <(findmnt -n -T "$MOUNTPOINT" -o TARGET,FSTYPE,FSROOT,MAJ:MIN | awk '{print $1, $2, $3, $4}')
MNT_OPTIONS="$(findmnt -n -T "$MOUNTPOINT" -o OPTIONS || true)"
info "target $MOUNTPOINT: mount $MNT_TARGET, type $MNT_FSTYPE, options $MNT_OPTIONS"
if [[ "$MNT_FSTYPE" == fuse* ]]; then
    [[ ",$MNT_OPTIONS," == *,allow_other,* ]] ||
        warn "FUSE mount without allow_other: the kernel denies every uid but the mounter's, so the tests that switch users fail with EACCES"
    [[ ",$MNT_OPTIONS," == *,default_permissions,* ]] ||
        info "FUSE mount without default_permissions: the file system must do all permission checks itself"
fi

ALLOW_REMOUNT=false
case "$REMOUNT" in
    yes) ALLOW_REMOUNT=true ;;
    no) ;;
    auto)
        n_same_sb="$(awk -v d="$MNT_DEV" '$3 == d' /proc/self/mountinfo | wc -l)"
        if ((IS_ROOT)) && [[ "$MNT_TARGET" != / && "$MNT_FSROOT" == / && "$n_same_sb" == 1 ]] &&
            [[ "$MNT_FSTYPE" =~ ^(tmpfs|ramfs|fuse|fuseblk|fuse\..+)$ ]]; then
            ALLOW_REMOUNT=true
        fi ;;
esac
info "EROFS tests (remount $MNT_TARGET read-only and back): $ALLOW_REMOUNT"
make_config "$ALLOW_REMOUNT" "$WORK/run.toml"

SEC_ARGS=()
case "$SECONDARY" in
    none) ;;
    auto)
        if ((IS_ROOT)); then
            SECONDARY_MNT="$(mktemp -d "${TMPDIR:-/tmp}/pjdfstest-secondary.XXXXXX")"
            if mount -t tmpfs -o size=8m,mode=0755 pjdfstest-secondary "$SECONDARY_MNT" 2>"$WORK/mount.err"; then
                SEC_ARGS=(-s "$SECONDARY_MNT")
            else
                warn "could not mount a tmpfs for the EXDEV tests: $(cat "$WORK/mount.err")"
                rmdir "$SECONDARY_MNT"; SECONDARY_MNT=""
            fi
        fi ;;
    *)
        [[ -d "$SECONDARY" ]] || die "--secondary-fs $SECONDARY is not a directory"
        [[ "$(stat -c %d "$SECONDARY")" != "$(stat -c %d "$MOUNTPOINT")" ]] ||
            warn "--secondary-fs $SECONDARY is on the same file system as $MOUNTPOINT: the EXDEV tests will fail"
        SEC_ARGS=(-s "$(realpath "$SECONDARY")") ;;
esac
info "secondary file system for EXDEV tests: ${SEC_ARGS[1]:-none}"

# ------------------------------------------------------------ the run
# pjdfstest's -e compares the internal name, which still has this module
# prefix (it is stripped only when printing).
# The EROFS tests get a pjdfstest process of their own, run first: some
# pjdfstest 0.2.2 tests leak file descriptors open for writing
# (open::einval_invalid_combination, posix_fallocate::affected_only_create_flags
# use nix::fcntl::open, which returns a raw fd that is never closed), and the
# kernel refuses to remount read-only (EBUSY) while a file is open for writing,
# so every EROFS test after them would fail with "mount point is busy".
EROFS_EXACT=(); OTHER_EXACT=()
for name in "${SELECTED[@]}"; do
    if [[ "$ALLOW_REMOUNT" == true && "$name" == *::erofs_* ]]; then
        EROFS_EXACT+=("pjdfstest::tests::$name")
    else
        OTHER_EXACT+=("pjdfstest::tests::$name")
    fi
done
TEMP_LOG=0
[[ -n "$LOG" ]] || { LOG="$(mktemp "${TMPDIR:-/tmp}/pjdfstest-log.XXXXXX")"; TEMP_LOG=1; }
: >"$LOG"
info "running ${#SELECTED[@]} tests ($N_EXCLUDED excluded) with $VERSION; full output: $LOG"
run_pjdfstest() { # test names...; appends to $LOG, returns pjdfstest's status
    local rc
    if ((VERBOSE)); then
        NO_COLOR=1 RUST_BACKTRACE=0 timeout --kill-after=10 "$TIMEOUT" \
            "$BIN" -c "$WORK/run.toml" -p "$MOUNTPOINT" "${SEC_ARGS[@]}" -e "$@" 2>&1 | tee -a "$LOG"
        rc=${PIPESTATUS[0]}
    else
        NO_COLOR=1 RUST_BACKTRACE=0 timeout --kill-after=10 "$TIMEOUT" \
            "$BIN" -c "$WORK/run.toml" -p "$MOUNTPOINT" "${SEC_ARGS[@]}" -e "$@" >>"$LOG" 2>&1
        rc=$?
    fi
    return "$rc"
}
# pjdfstest remounts with `mount -o remount,ro|rw MOUNTPOINT` (and bind-mounts
# for rmdir::ebusy) through the `mount` found in PATH. For a FUSE file system,
# mount(8) hands a remount to the /sbin/mount.fuse* helper, which cannot do it
# (it tries to start the file system again and fails). `mount -i` skips the
# helpers and calls mount(2) directly, which remounts a FUSE superblock fine.
REAL_MOUNT="$(command -v mount)" || die "mount(8) not found"
mkdir "$WORK/bin"
printf '#!/bin/sh\nexec %q -i "$@"\n' "$REAL_MOUNT" >"$WORK/bin/mount"
chmod +x "$WORK/bin/mount"
export PATH="$WORK/bin:$PATH"
start=$SECONDS
RC=0
set +e
if ((${#EROFS_EXACT[@]})); then
    run_pjdfstest "${EROFS_EXACT[@]}"; rc=$?; ((rc == 0)) || RC=$rc
fi
if ((${#OTHER_EXACT[@]})); then
    run_pjdfstest "${OTHER_EXACT[@]}"; rc=$?; ((rc == 0)) || RC=$rc
fi
set -e
ELAPSED=$((SECONDS - start))

# ------------------------------------------------------------ the summary
# Each result line is "NAME <spaces> ok|FAILED|skipped"; the non-empty lines
# after it (up to the next result) are the failure message or skip reasons.
sed -E 's/\x1b\[[0-9;]*m//g' "$LOG" | awk -v re="$RESULT_RE" -v out="$WORK" '
    function flush() { if (name != "") print name "\t" status "\t" msg > (out "/results.tsv"); name = "" }
    $0 ~ re { flush(); name = $1; status = $0; sub(/^[^ ]+ +/, "", status); msg = ""; next }
    /^Summary: / || /^$/ { flush(); next }
    name != "" { m = $0; sub(/^[ \t]+/, "", m); if (msg == "") msg = m; else if (length(msg) < 400) msg = msg " | " m; next }
    END { flush() }'
touch "$WORK/results.tsv"

declare -A STATUS=() MSG=()
while IFS=$'\t' read -r name status msg; do STATUS[$name]="$status"; MSG[$name]="$msg"; done <"$WORK/results.tsv"
PASSED=0; FAILED=(); SKIPPED=(); NOTRUN=()
for name in "${SELECTED[@]}"; do
    case "${STATUS[$name]:-}" in
        ok) PASSED=$((PASSED + 1)) ;;
        skipped) SKIPPED+=("$name") ;;
        "") NOTRUN+=("$name") ;;
        *) FAILED+=("$name") ;;
    esac
done

echo
echo "pjdfstest on $MOUNTPOINT ($MNT_FSTYPE), $VERSION, ${ELAPSED}s:"
echo "  selected ${#SELECTED[@]}, excluded $N_EXCLUDED, passed $PASSED, failed ${#FAILED[@]}, skipped ${#SKIPPED[@]}, not run ${#NOTRUN[@]}"
if ((${#FAILED[@]})); then
    echo "failed tests:"
    for name in "${FAILED[@]}"; do echo "  $name: ${MSG[$name]:0:240}"; done
fi
if ((${#SKIPPED[@]})); then
    if ((ALLOW_SKIPS)); then echo "skipped tests (allowed by --allow-skips):"; else echo "skipped tests (not excluded, so they count as not passed):"; fi
    for name in "${SKIPPED[@]}"; do echo "  $name: ${MSG[$name]:0:240}"; done
fi
if ((${#NOTRUN[@]})); then
    echo "tests that produced no result (pjdfstest exited with status $RC; 124 = --timeout hit):"
    for name in "${NOTRUN[@]:0:20}"; do echo "  $name"; done
    ((${#NOTRUN[@]} <= 20)) || echo "  ... and $((${#NOTRUN[@]} - 20)) more"
fi

ok=1
((${#FAILED[@]} == 0 && ${#NOTRUN[@]} == 0)) || ok=0
((${#SKIPPED[@]} == 0 || ALLOW_SKIPS)) || ok=0
# pjdfstest exits non-zero only for failures; anything else is a crash.
((RC == 0 || ${#FAILED[@]} > 0)) || { echo "pjdfstest exited with status $RC"; ok=0; }
if ((ok)); then ((TEMP_LOG)) && rm -f "$LOG"; else echo "full pjdfstest output: $LOG"; fi
echo "pjdfstest: $PASSED passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
((ok)) && exit 0 || exit 1
