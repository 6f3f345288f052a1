# The steps of an etcdctl walkthrough, shared by ctl-walkthrough.sh and
# auth-walkthrough.sh: each step prints `### ctl <arguments>`, then its
# stdout, its stderr (each line prefixed `stderr: `) and `[exit N]`, with
# what differs between servers and runs replaced by placeholders.
#
# The sourcing script sets CTL, ENDPOINT, `work` (a scratch directory) and
# `lease` (a lease ID to hide, or empty).

# Replaces what differs between servers and runs with placeholders.
normalize() {
    local endpoint="${ENDPOINT//./\\.}"
    local rules=(
        -e '/^\{"level":/d'
        -e "s#${work}#<DIR>#g"
        -e "s#${endpoint}#<ENDPOINT>#g"
        -e 's#(https?|unixs?)://[^ ,|"]+#<URL>#g'
    )
    if [ -n "$lease" ]; then
        rules+=(-e "s/${lease}/<LEASE_ID>/g")
    fi
    rules+=(
        -e 's/\blease [0-9a-f]{16}\b/lease <LEASE_ID>/g'
        -e 's/remaining\([0-9-]+s\)/remaining(<TTL>s)/g'
        -e 's/"(cluster_id|member_id|raft_term)":[0-9]+/"\1":<\1>/g'
        -e 's/took = [0-9.]+[a-zµ]+$/took = <TOOK>/'
        -e 's/^[0-9a-f]+, (started|unstarted), [^,]*, /<MEMBER_ID>, \1, <NAME>, /'
        -e 's/^<ENDPOINT>, [0-9a-f]+, [^,]*, [^,]*, (true|false), (true|false), [0-9]+, [0-9]+, [0-9]+, /<ENDPOINT>, <MEMBER_ID>, <VERSION>, <DB_SIZE>, <IS_LEADER>, \2, <RAFT_TERM>, <RAFT_INDEX>, <RAFT_APPLIED_INDEX>, /'
        # Tables: column widths follow the replaced values, so runs of
        # spaces and dashes are squeezed before cells are matched.
        -e '/^\+[-+]+\+$/s/-+/-/g'
        -e '/^\|/s/ +/ /g'
        -e 's/^\| [0-9a-f]+ \| (started|unstarted) \| [^|]* \| /| <MEMBER_ID> | \1 | <NAME> | /'
        -e 's/^\| <ENDPOINT> \| [0-9a-f]+ \| [^|]+ \| [^|]+ \| (true|false) \| (true|false) \| [0-9]+ \| [0-9]+ \| [0-9]+ \|/| <ENDPOINT> | <MEMBER_ID> | <VERSION> | <DB_SIZE> | <IS_LEADER> | \2 | <RAFT_TERM> | <RAFT_INDEX> | <RAFT_APPLIED_INDEX> |/'
        -e 's/^\| <ENDPOINT> \| (true|false) \| [^|]+ \|/| <ENDPOINT> | \1 | <TOOK> |/'
    )
    sed -E "${rules[@]}"
}

# The step's title: the arguments as a shell would need them quoted.
title() {
    local quoted
    quoted="$(printf ' %q' "$@")"
    echo "### ctl${quoted}" | normalize
}

# step [--stdin FILE] ARGS...: runs the client with ARGS and prints the result.
step() {
    local input=/dev/null
    if [ "$1" = "--stdin" ]; then
        input="$2"
        shift 2
    fi
    title "$@"
    "$CTL" --endpoints="$ENDPOINT" "$@" <"$input" >"$work/out" 2>"$work/err"
    local status=$?
    normalize <"$work/out"
    normalize <"$work/err" | sed 's/^/stderr: /'
    echo "[exit $status]"
}
