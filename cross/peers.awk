# cross/peers.awk: what installing each of PEERS would take on a minimal Debian, from
# Debian's own figures. Input: `apt-cache dumpavail`. Run by cross/sizes.sh:
#
#   apt-cache dumpavail | awk -v PEERS="supervisor monit" -f cross/peers.awk
#
# The minimal Debian is what `debootstrap --variant=minbase` installs: the packages
# marked Essential or of Priority required, usr-is-merged, and what they depend on.
# For each peer, follows Depends and Pre-Depends as `apt-get install
# --no-install-recommends` would on that system (an alternative already there, or
# provided by a package already there, satisfies the dependency; otherwise the first
# alternative, a virtual package by its first provider) and adds up the
# Installed-Size (KiB) of the packages that the minimal Debian lacks.
# Output, one line per peer: NAME VERSION OWN_KIB TOTAL_KIB COUNT LARGEST_ADDED,...
# (the three largest packages it pulls in).

# A package may be listed more than once (several suites): the first record counts.
/^Package: / { pkg = $2; dup = (pkg in known); next }
/^$/ { if (pkg != "") known[pkg] = 1; pkg = ""; next }
dup { next }
/^Version: / { version[pkg] = $2; next }
/^Installed-Size: / { size[pkg] = $2; next }
/^Priority: required/ || /^Essential: yes/ { root[pkg] = 1; next }
/^(Depends|Pre-Depends): / {
    line = $0
    sub(/^[A-Za-z-]+: /, "", line)
    deps[pkg] = (pkg in deps) ? deps[pkg] ", " line : line
    next
}
/^Provides: / {
    line = $0
    sub(/^Provides: /, "", line)
    n = split(line, provided, /, */)
    for (i = 1; i <= n; i++) {
        name = provided[i]
        sub(/ .*/, "", name)
        providers[name] = (name in providers) ? providers[name] " " pkg : pkg
    }
    next
}

# The package name of one alternative: version and architecture qualifier dropped.
function bare(alternative,    name) {
    name = alternative
    gsub(/^ +| +$/, "", name)
    sub(/ .*/, "", name)
    sub(/:.*/, "", name)
    return name
}

# True when `name` is in the set `have`, or provided by a package in it.
function satisfied(name, have,    list, n, i) {
    if (name in have) return 1
    if (!(name in providers)) return 0
    n = split(providers[name], list, / /)
    for (i = 1; i <= n; i++)
        if (list[i] in have) return 1
    return 0
}

# The package that installs `name`: itself, or its first provider; "" if none.
function installable(name,    list) {
    if (name in size) return name
    if (!(name in providers)) return ""
    split(providers[name], list, / /)
    return list[1]
}

# Adds to the set `have` what `pkg`'s dependencies pull in, recursively; `done` marks
# the packages already followed.
function follow(pkg, have, done,    groups, n, i, alts, m, j, chosen) {
    if (pkg in done) return
    done[pkg] = 1
    if (!(pkg in deps)) return
    n = split(deps[pkg], groups, /, */)
    for (i = 1; i <= n; i++) {
        m = split(groups[i], alts, /\|/)
        chosen = ""
        for (j = 1; j <= m; j++) {
            if (satisfied(bare(alts[j]), have)) {
                chosen = "-"
                break
            }
            if (chosen == "") chosen = installable(bare(alts[j]))
        }
        if (chosen != "" && chosen != "-") {
            have[chosen] = 1
            follow(chosen, have, done)
        }
    }
}

END {
    # The minimal Debian: its roots first, so that their alternatives pick each other.
    root["usr-is-merged"] = 1
    for (p in root) base[p] = 1
    for (p in root) follow(p, base, based)

    n = split(PEERS, peers, / +/)
    for (i = 1; i <= n; i++) {
        peer = peers[i]
        if (!(peer in size)) {
            print peer, "-", 0, 0, 0, "not-in-the-package-lists"
            continue
        }
        delete have
        delete done
        for (p in base) have[p] = 1
        have[peer] = 1
        follow(peer, have, done)
        total = 0
        count = 0
        for (p in have)
            if (!(p in base)) {
                total += size[p]
                count++
            }
        # The three largest packages it pulls in, largest first.
        names = ""
        delete named
        for (k = 1; k <= 3; k++) {
            best = ""
            for (p in have)
                if (!(p in base) && p != peer && !(p in named) && (best == "" || size[p] + 0 > size[best] + 0))
                    best = p
            if (best == "") break
            named[best] = 1
            names = names (names == "" ? "" : ",") best
        }
        print peer, version[peer], size[peer], total, count, (names == "" ? "-" : names)
    }
}
