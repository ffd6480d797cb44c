# Reads bench/goals (tab-separated, see there) and then Go benchmark output;
# prints the rows of BENCHMARKS.md's table, in the order of the goals' rows.
# Usage: awk -F'\t' -f bench/table.awk bench/goals RAW

FNR == NR {
	if ($0 ~ /^#/ || NF < 4) next
	key = $2 SUBSEP $3 SUBSEP $4
	row[key] = $1; check[key] = $5; text[key] = $6
	if (!(($2 SUBSEP $3) in grouprow)) grouprow[$2, $3] = $1
	if (!($2 in anyrow)) anyrow[$2] = $1
	next
}

/^Benchmark[^ \t]+[ \t]+[0-9]+[ \t]/ {
	nf = split($0, f, /[ \t]+/)
	name = f[1]; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
	# Group_Subject/sub → group "Group/sub", subject "Subject".
	suffix = ""
	if ((i = index(name, "/")) > 0) { suffix = substr(name, i); name = substr(name, 1, i - 1) }
	if ((i = index(name, "_")) == 0) next
	group = substr(name, 1, i - 1) suffix; subject = substr(name, i + 1)
	custom = 0
	for (i = 3; i < nf; i += 2) {
		if (f[i + 1] != "ns/op" && f[i + 1] != "B/op" && f[i + 1] != "allocs/op" && f[i + 1] != "MB/s") {
			add(group, subject, f[i + 1], f[i]); custom = 1
		}
	}
	if (!custom) add(group, subject, "ns/op", f[3])
}

function add(group, subject, unit, v,   s) {
	s = group SUBSEP subject SUBSEP unit
	if (!(s in n)) { order[++k] = s }
	vals[s, ++n[s]] = v + 0
}

function median(s,   m, i, j, t, a) {
	m = n[s]
	for (i = 1; i <= m; i++) a[i] = vals[s, i]
	for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
}

function human(v, unit) {
	if (unit ~ /^ns\//) {
		if (v >= 1e6) return sprintf("%.2f ms", v / 1e6)
		if (v >= 1e3) return sprintf("%.1f µs", v / 1e3)
		return sprintf("%d ns", v)
	}
	if (unit ~ /^B\//) {
		if (v >= 1048576) return sprintf("%.1f MiB", v / 1048576)
		if (v >= 1024) return sprintf("%.1f KiB", v / 1024)
		return sprintf("%d B", v)
	}
	if (unit == "ops/s") return sprintf("%.0f", v)
	return sprintf("%.2f", v)
}

function own(subject) { return subject == "Locker" || subject == "Coord" }

# met evaluates check c for coord's median m against the subject's median a.
function met(c, m, a, unit,   x, g) {
	if (c == "" || c == "-" || c == "report") return "-"
	if (c ~ /^max<=/) { x = substr(c, 6) + 0; return m <= x ? "yes" : "**no**" }
	if (c ~ /^of:/) {
		g = substr(c, 4); x = g; sub(/<=.*/, "", g); sub(/.*<=/, "", x)
		if (!((g SUBSEP unit) in coord)) return "?"
		return m <= x * coord[g, unit] ? "yes" : "**no**"
	}
	if (a <= 0) return "?"
	if (c ~ /^lin<=/) { x = substr(c, 6); g = x; sub(/\+.*/, "", x); sub(/.*\+/, "", g); return m <= x * a + g ? "yes" : "**no**" }
	if (c ~ /^ratio<=/) return m / a <= substr(c, 8) + 0 ? "yes" : "**no**"
	if (c ~ /^ratio</) return m / a < substr(c, 7) + 0 ? "yes" : "**no**"
	if (c ~ /^ratio>=/) return m / a >= substr(c, 8) + 0 ? "yes" : "**no**"
	return "?"
}

END {
	for (i = 1; i <= k; i++) {
		split(order[i], p, SUBSEP)
		med[order[i]] = median(order[i])
		if (own(p[2])) coord[p[1], p[3]] = med[order[i]]
	}
	maxrow = 0
	for (i = 1; i <= k; i++) {
		s = order[i]; split(s, p, SUBSEP); g = p[1]; subj = p[2]; unit = p[3]
		gk = g SUBSEP unit; m = med[s]
		key = g SUBSEP unit SUBSEP (own(subj) ? "-" : subj)
		r = (key in row) ? row[key] : (gk in grouprow) ? grouprow[gk] : (g in anyrow) ? anyrow[g] : ""
		if (own(subj)) ratio = "coord"
		else ratio = ((gk in coord) && m > 0) ? sprintf("%.3g", coord[gk] / m) : "-"
		goal = "-"; ok = "-"
		if (key in row && check[key] != "-" && check[key] != "") {
			goal = text[key]
			ok = met(check[key], (gk in coord) ? coord[gk] : -1, m, unit)
		}
		line = sprintf("| %s | %s | %s | %s (%s) | %s | %s | %s |", r == "" ? "?" : r, g, subj, human(m, unit), unit, ratio, goal, ok)
		if (r == "") r = 999
		lines[r] = lines[r] line "\n"
		if (r + 0 > maxrow) maxrow = r + 0
	}
	for (r = 1; r <= maxrow; r++) printf "%s", lines[r]
}
