#!/usr/bin/env python3
"""The man pages, the bash completion and the Grafana dashboard against what
the binaries and the daemon's sources say, so that they cannot drift:

- every option `uzswapd --help` prints is in uzswapd(8), and each but
  --help/--version/--config is a key of uzswapd.conf(5); every option
  uzswapd(8) and uzswapd.conf(5) describe exists;
- every option of `uzswapctl --help` and of each command's --help, and every
  command, is in uzswapctl(8) and in the completion;
- every setting `uzswapctl set` takes (the daemon's parse_setting) is in
  uzswapctl(8)'s SETTINGS and in the completion, and nothing else is;
- every key of the status JSON (a status captured from a real daemon, or
  --status FILE) is described in uzswapctl(8)'s STATISTICS;
- every metric `stats --prometheus` prints (format-metrics on that status)
  is in uzswapctl(8)'s MONITORING, and every uzswap_ metric the dashboard
  queries is one of them.

usage: docs_match.py SRC_DIR UZSWAPD UZSWAPCTL FORMAT_METRICS [--status FILE]
"""
import json
import re
import subprocess
import sys

failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def run(*args, stdin=None):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, check=True).stdout


def help_flags(text):
    """Long options in CLI11 --help output (`--no-swapon{false}` -> --no-swapon)."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text))


def section(scd, title):
    """The text of `# TITLE` up to the next top-level heading."""
    m = re.search(r"^# " + re.escape(title) + r"\n(.*?)(?=^# |\Z)", scd, re.M | re.S)
    if not m:
        failures.append(f"no '# {title}' section")
        return ""
    return m.group(1)


def terms(text):
    """The terms of scdoc definition lists: lines that start with bold text
    (their descriptions are indented below them)."""
    return re.findall(r"^\*.*$", text, re.M)


def bold(text):
    """Everything set in bold (*...*), scdoc's markup."""
    return set(re.findall(r"\*([^*\s][^*]*?)\*", text))


def main():
    args = sys.argv[1:]
    status_file = None
    if "--status" in args:
        i = args.index("--status")
        status_file = args[i + 1]
        del args[i:i + 2]
    src, uzswapd, uzswapctl, format_metrics = args
    man = {p: open(f"{src}/docs/man/{p}.scd").read() for p in ("uzswapd.8", "uzswapctl.8", "uzswapd.conf.5")}
    completion = open(f"{src}/tools/completion/uzswapctl.bash").read()

    # uzswapd: options and config keys.
    d_flags = help_flags(run(uzswapd, "--help"))
    check(len(d_flags) >= 20, f"uzswapd --help shows only {len(d_flags)} options")
    d_opts = section(man["uzswapd.8"], "OPTIONS")
    d_documented = set()
    for term in terms(d_opts):
        d_documented |= set(re.findall(r"\*(--[a-z][a-z0-9-]*)\*", term))
    for f in sorted(d_flags - d_documented):
        failures.append(f"uzswapd {f} is not described in uzswapd(8) OPTIONS")
    for f in sorted(d_documented - d_flags):
        failures.append(f"uzswapd(8) describes {f}, which uzswapd --help does not have")
    keys = {f[2:] for f in d_flags} - {"help", "version", "config"}
    conf_keys = set()
    for term in terms(section(man["uzswapd.conf.5"], "KEYS")):
        conf_keys |= set(re.findall(r"\*([a-z][a-z0-9-]*)\* =", term))
    for k in sorted(keys - conf_keys):
        failures.append(f"config key {k} is not described in uzswapd.conf(5) KEYS")
    for k in sorted(conf_keys - keys):
        failures.append(f"uzswapd.conf(5) describes {k}, which uzswapd does not take")

    # uzswapctl: commands and options.
    top = run(uzswapctl, "--help")
    commands = re.findall(r"^  ([a-z]+) {2,}", top.split("Subcommands:")[1], re.M)
    check(len(commands) >= 5, f"uzswapctl --help lists only {len(commands)} commands")
    c_man = man["uzswapctl.8"]
    c_commands = bold(section(c_man, "COMMANDS"))
    c_bold = bold(c_man)
    global_flags = help_flags(top.split("Subcommands:")[0])
    for f in sorted(global_flags):
        check(f in c_bold, f"uzswapctl {f} is not in uzswapctl(8)")
        check(re.search(r"(?<![\w-])" + re.escape(f) + r"(?![\w-])", completion),
              f"uzswapctl {f} is not in the bash completion")
    for c in commands:
        check(c in c_commands, f"command {c} is not in uzswapctl(8) COMMANDS")
        check(re.search(r"(?<![\w-])" + c + r"(?![\w-])", completion), f"command {c} is not in the bash completion")
        flags = help_flags(run(uzswapctl, c, "--help"))
        for f in sorted(flags):
            check(f in c_bold, f"uzswapctl {c} {f} is not in uzswapctl(8)")
            check(re.search(r"(?<![\w-])" + re.escape(f) + r"(?![\w-])", completion),
                  f"uzswapctl {c} {f} is not in the bash completion")

    # Settings of `uzswapctl set`, from the daemon's parse_setting.
    source = open(f"{src}/daemon/settings.cpp").read()
    body = source[source.find(" parse_setting("):]
    body = body[:body.find("\n}\n")]
    settings = set(re.findall(r'key == "([a-z-]+)"', body))
    check(len(settings) >= 5, "cannot find the settings in daemon/settings.cpp's parse_setting "
                              f"(found {sorted(settings)}): did it move? update this test")
    man_settings = {re.match(r"\*([a-z][a-z0-9-]*)\*", t).group(1)
                    for t in terms(section(c_man, "SETTINGS")) if re.match(r"\*[a-z]", t)}
    m = re.search(r'_uzswapctl_settings="([^"]*)"', completion)
    comp_settings = set(m.group(1).split()) if m else set()
    for s in sorted(settings - man_settings):
        failures.append(f"setting {s} is not in uzswapctl(8) SETTINGS")
    for s in sorted(man_settings - settings):
        failures.append(f"uzswapctl(8) SETTINGS has {s}, which parse_setting does not take")
    for s in sorted(settings ^ comp_settings):
        failures.append(f"setting {s} is in only one of parse_setting and the bash completion")

    # Statistics: every key of a real status.
    status = json.load(open(status_file or f"{src}/tests/packaging/status.json"))
    documented = set()
    for b in bold(section(c_man, "STATISTICS")):
        for part in re.split(r"[.\s]", b):
            documented.add(part.replace("[]", "").strip(":,"))

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                check(k in documented, f"status key {path}{k} is not described in uzswapctl(8) STATISTICS")
                walk(v, f"{path}{k}.")
        elif isinstance(value, list):
            for v in value:
                walk(v, path[:-1] + "[].")
    walk(status, "")

    # Metrics: what format_prometheus prints for that status.
    text = run(format_metrics, stdin=json.dumps(status))
    samples = {re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
               for line in text.splitlines() if line and not line.startswith("#")}
    families = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    check(len(samples) >= 15, f"format_prometheus printed only {len(samples)} metric names")
    monitoring = bold(section(c_man, "MONITORING"))
    for name in sorted(samples):
        check(name in monitoring, f"metric {name} is not in uzswapctl(8) MONITORING")
    dashboard = json.load(open(f"{src}/docs/grafana-dashboard.json"))
    exprs = []

    def targets(panels):
        for p in panels:
            exprs.extend(t.get("expr", "") for t in p.get("targets", []))
            targets(p.get("panels", []))
    targets(dashboard.get("panels", []))
    check(len(exprs) >= 10, f"the dashboard has only {len(exprs)} queries")
    used = set()
    for e in exprs:
        used |= set(re.findall(r"\buzswap_[a-z0-9_]+", e))
    for name in sorted(used - samples - families):
        failures.append(f"the dashboard queries {name}, which uzswapctl stats --prometheus does not print")
    for name in ("uzswap_pool_bytes", "uzswap_orig_bytes", "uzswap_stores_total", "uzswap_loads_total",
                 "uzswap_cgroup_stored_pages", "uzswap_reclaim_written_total"):
        check(name in used, f"the dashboard does not show {name}")

    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print(f"ok: {len(d_flags)} uzswapd options, {len(keys)} config keys, {len(commands)} commands, "
          f"{len(settings)} settings, status keys, {len(samples)} metrics ({len(used)} in the dashboard) match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
