"""How fast the git gate scans what a push adds (issue 6's scanner benchmark).

    .venv/bin/python benchmarks/secretscan_throughput.py [--mb 100] [--seed 6] [--runs 1]

Generates ``--mb`` megabytes of ``git log -p`` output in the shape the gate's
pre-receive hook reads (``bottle.core.gitgate.PUSH_LOG_ARGS``): a few
hundred commits of code-like files, with added, removed and context lines,
and a few large commits. Secrets of every known format (some base64- or
hex- or percent-encoded, one the gate's own brokered credential) are planted on added
lines at known file:line positions; decoys of the same kinds sit on removed
and context lines, where the push does not add them.

Measured on one core, in-process:

- the scanner alone: ``SecretScanner.scan`` over every commit's patch;
- the gate's path: ``LogSplitter`` over 1 MiB chunks, then ``scan_patch``
  (scan + keep only what lands on added lines, as file:line).

``--compare-module PATH`` also times a candidate implementation of
``bottle.core.secretscan`` loaded from PATH (a changed copy of the module)
and says whether it reports exactly the same findings as the current one.

Prints MB/s of each and the findings against the plants: every plant must
be found with its rule at its file:line, and nothing else may be reported
(a finding on a clean line, or on a decoy's removed/context line, is a
false positive). Target: >= 50 MB/s for the gate's path. Figures only;
nothing passes or fails, but the exit code is 1 if a plant was missed or a
false positive reported.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import importlib.util
import os
import random
import string
import sys
import time
from dataclasses import dataclass

from bottle.core.gitgate import LogSplitter, scan_patch
from bottle.core.secretscan import BROKERED, BrokeredSecret, SecretScanner

TARGET_MBS = 50.0
BROKERED_SLOT = "BOTTLE_GIT_TOKEN_0"
ALNUM = string.ascii_letters + string.digits


@dataclass(frozen=True)
class Plant:
    path: str
    line: int
    rule: str


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _mixed(rng: random.Random, n: int) -> str:
    # Real keys mix cases and digits; the scanner insists on it for some formats.
    while True:
        s = _rand(rng, ALNUM, n)
        if any(c.isdigit() for c in s) and any(c.islower() for c in s) and any(c.isupper() for c in s):
            return s


def secret_line(rng: random.Random, kind: str, brokered: str) -> tuple[str, str]:
    """(line text, rule the scanner must report) for one planted secret."""
    upper = string.ascii_uppercase + string.digits
    if kind == "aws":
        return f'AWS_ACCESS_KEY_ID = "AKIA{_rand(rng, upper, 16)}"', "aws-access-key-id"
    if kind == "aws-secret":
        return f"aws_secret_access_key = {_mixed(rng, 40)}", "aws-secret-access-key"
    if kind == "github":
        return f"token: ghp_{_mixed(rng, 36)}", "github-token"
    if kind == "gitlab":
        return f"GITLAB = 'glpat-{_mixed(rng, 20)}'", "gitlab-token"
    if kind == "anthropic":
        return f"ANTHROPIC_API_KEY=sk-ant-api03-{_mixed(rng, 64)}", "anthropic-api-key"
    if kind == "openai":
        return f'openai.api_key = "sk-proj-{_mixed(rng, 40)}"', "openai-api-key"
    if kind == "slack":
        return f"SLACK=xoxb-{rng.randrange(10**11, 10**12)}-{rng.randrange(10**12, 10**13)}-{_mixed(rng, 24)}", "slack-token"
    if kind == "stripe":
        return f"stripe.api_key = 'sk_live_{_mixed(rng, 24)}'", "stripe-live-key"
    if kind == "google":
        return f"const key = 'AIza{_mixed(rng, 35)}';", "google-api-key"
    if kind == "pem":
        return "-----BEGIN RSA PRIVATE KEY-----", "private-key"
    if kind == "jwt":
        head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(f'{{"sub":"{rng.randrange(10**9)}"}}'.encode()).rstrip(b"=").decode()
        return f"Authorization: Bearer {head}.{body}.{_rand(rng, ALNUM + '-_', 43)}", "jwt"
    if kind == "aws-b64":
        blob = base64.b64encode(f"id=AKIA{_rand(rng, upper, 16)}".encode()).decode()
        return f"data: {blob}", "aws-access-key-id"
    if kind == "github-hex":
        return f"blob = '{f'ghp_{_mixed(rng, 36)}'.encode().hex()}'", "github-token"
    if kind == "github-url":
        return f"hook = 'https://hooks.example.com/notify?t=ghp%5F{_mixed(rng, 36)}&x=1'", "github-token"
    if kind == "brokered":
        return f"password = {brokered}", BROKERED
    raise ValueError(kind)


PLANT_KINDS = (
    "aws", "aws-secret", "github", "gitlab", "anthropic", "openai", "slack", "stripe",
    "google", "pem", "jwt", "aws-b64", "github-hex", "github-url", "brokered",
)


# Kinds of clean line (see clean_pool) and how often each occurs. "code" is
# source code with the odd hash, blob or percent sign (about 1 line in 25
# carries random hex or base64); "dense" is a lockfile/fixture-heavy worst
# case where 5 lines in 18 do.
PROFILES = {
    "code": (12, 10, 1, 1, 1, 1, 6, 3, 0.5, 12, 10, 8, 6, 2, 10, 4, 3, 0.5),
    "dense": (1,) * 18,
}


def clean_pool(rng: random.Random, profile: str = "code", size: int = 40_000) -> list[str]:
    """Ordinary source lines, including near-misses of token formats that are not tokens."""
    words = (
        "result items value offset config user session request response handler total index count "
        "buffer payload stream client server cache token_ref task disk risk mask ask desk whisk"
    ).split()
    pool: list[str] = []
    kinds = rng.choices(range(len(PROFILES[profile])), weights=PROFILES[profile], k=size)
    for kind in kinds:
        w = rng.sample(words, 3)
        if kind == 0:
            pool.append(f"    {w[0]} = compute_{w[1]}({w[2]}, offset={rng.randrange(1000)})  # adjust")
        elif kind == 1:
            pool.append(f'    "{w[0]}_{w[1]}": "{w[2]}-{rng.randrange(10**6)}",')
        elif kind == 2:
            pool.append(f"commit = '{hashlib.sha1(str(rng.random()).encode()).hexdigest()}'")
        elif kind == 3:
            pool.append(f"digest: sha256:{hashlib.sha256(str(rng.random()).encode()).hexdigest()}")
        elif kind == 4:
            pool.append(f"    icon = '{base64.b64encode(rng.randbytes(rng.choice((18, 33, 48)))).decode()}'")
        elif kind == 5:
            pool.append(f"id: {rng.getrandbits(128):032x}"[:40])
        elif kind == 6:
            pool.append(f"url = 'https://example.com/api/v1/{w[0]}?page={rng.randrange(99)}&sort={w[1]}'")
        elif kind == 7:
            # Near-misses: "sk-" inside words, lowercase akia, eyJ without a JWT around it.
            pool.append(f"{w[0]}_name = 'disk-usage-report-{w[1]}-generator-{rng.randrange(10**6)}'  # akia{w[2]}")
        elif kind == 8:
            pool.append(f"header = 'eyJ{base64.urlsafe_b64encode(rng.randbytes(12)).decode()}'")
        elif kind == 9:
            pool.append("")
        elif kind == 10:
            pool.append(f"def {w[0]}_{w[1]}(self, {w[2]}: int = {rng.randrange(100)}) -> None:")
        elif kind == 11:
            pool.append(f"        raise ValueError(f\"{w[0]} {{{w[1]}}} is not a valid {w[2]}\")")
        elif kind == 12:
            pool.append(f"  - name: {w[0]}-{w[1]}\n    image: registry.example.com/{w[2]}:{rng.randrange(9)}.{rng.randrange(20)}")
        elif kind == 13:
            pool.append(f"SECRET_KEY_NAME = '{w[0]}_secret_key'  # the variable's name, not a value")
        elif kind == 14:
            pool.append(f"    for {w[0]} in {w[1]}.{w[2]}s():  " + "x" * rng.randrange(0, 60))
        elif kind == 15:
            pool.append(f"// TODO({w[0]}): task-{rng.randrange(10**4)} risk-{w[1]} ask-{w[2]}")
        elif kind == 16:
            pool.append(f'    log.debug("%s: %d {w[0]} in %.2f s", {w[1]}, len({w[2]}), elapsed)')
        else:
            pool.append(f"    path = '/search?q={w[0]}%20{w[1]}%2F{w[2]}&lang=en%2Dus'")
    # Multi-line pool entries are split so every entry is one line.
    return [line for entry in pool for line in entry.split("\n")]


def generate(total_mb: int, seed: int, brokered: str, profile: str = "code") -> tuple[bytes, set[Plant], int]:
    """(git log output, planted secrets on added lines, number of decoys on removed/context lines)."""
    rng = random.Random(seed)
    pool = clean_pool(rng, profile)
    target = total_mb * 1_000_000
    parts: list[bytes] = []
    plants: set[Plant] = set()
    decoys = 0
    size = 0
    commit_no = 0
    while size < target:
        commit_no += 1
        sha = hashlib.sha1(f"{seed}-{commit_no}".encode()).hexdigest()
        big = commit_no % 97 == 0
        files = rng.randrange(1, 6) if not big else 2
        chunks = [f"\0commit {sha}\n\n"]
        for f in range(files):
            path = f"src/pkg{commit_no % 37}/module_{commit_no}_{f}.py"
            new_file = rng.random() < 0.3
            lines_in_file = rng.randrange(200, 4000) if not big else 60_000
            chunks.append(f"diff --git a/{path} b/{path}\n")
            if new_file:
                chunks.append(f"new file mode 100644\nindex 0000000..{sha[:7]}\n--- /dev/null\n+++ b/{path}\n")
                chunks.append(f"@@ -0,0 +1,{lines_in_file} @@\n")
                for n in range(1, lines_in_file + 1):
                    if rng.random() < 0.002:
                        text, rule = secret_line(rng, rng.choice(PLANT_KINDS), brokered)
                        plants.add(Plant(path, n, rule))
                    else:
                        text = rng.choice(pool)
                    chunks.append(f"+{text}\n")
                continue
            chunks.append(f"index {sha[:7]}..{sha[7:14]} 100644\n--- a/{path}\n+++ b/{path}\n")
            new_line = rng.randrange(1, 500)
            old_line = new_line + rng.randrange(-20, 20)
            remaining = lines_in_file
            while remaining > 0:
                hunk_len = min(remaining, rng.randrange(20, 300))
                remaining -= hunk_len
                body: list[str] = []
                new_count = old_count = 0
                n = new_line
                for _ in range(hunk_len):
                    r = rng.random()
                    kind = "+" if r < 0.6 else ("-" if r < 0.75 else " ")
                    planted = rng.random() < 0.002
                    if planted:
                        text, rule = secret_line(rng, rng.choice(PLANT_KINDS), brokered)
                    else:
                        text = rng.choice(pool)
                    if kind == "+":
                        if planted:
                            plants.add(Plant(path, n, rule))
                        n += 1
                        new_count += 1
                    elif kind == " ":
                        decoys += planted
                        n += 1
                        new_count += 1
                        old_count += 1
                    else:
                        decoys += planted
                        old_count += 1
                    body.append(f"{kind}{text}\n")
                chunks.append(f"@@ -{max(old_line, 1)},{old_count} +{new_line},{new_count} @@ def {rng.choice(pool)[:20]}\n")
                chunks.extend(body)
                new_line = n + rng.randrange(5, 50)
                old_line = new_line + rng.randrange(-20, 20)
        blob = "".join(chunks).encode()
        parts.append(blob)
        size += len(blob)
    return b"".join(parts), plants, decoys


def _records(log: bytes) -> list[tuple[str, bytes]]:
    splitter = LogSplitter()
    out: list[tuple[str, bytes]] = []
    for i in range(0, len(log), 1 << 20):
        out += splitter.feed(log[i:i + (1 << 20)])
    return out + splitter.finish()


def _load_module(path: str) -> object:
    spec = importlib.util.spec_from_file_location("candidate_secretscan", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _time_gate(scanner: SecretScanner, log: bytes, runs: int) -> tuple[float, list]:
    best, findings = float("inf"), []
    for _ in range(runs):
        t0 = time.perf_counter()
        splitter = LogSplitter()
        findings = []
        for i in range(0, len(log), 1 << 20):
            for sha, patch in splitter.feed(log[i:i + (1 << 20)]):
                findings += scan_patch(scanner, sha, patch)
        for sha, patch in splitter.finish():
            findings += scan_patch(scanner, sha, patch)
        best = min(best, time.perf_counter() - t0)
    return best, findings


def _time_raw(scanner: SecretScanner, records: list[tuple[str, bytes]], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _sha, patch in records:
            scanner.scan(patch, "patch")
        best = min(best, time.perf_counter() - t0)
    return best


def run(mb: int, seed: int, runs: int, profile: str, compare: str | None = None) -> int:
    rng = random.Random(seed + 1)
    brokered = "gt-" + _mixed(rng, 40)
    t0 = time.perf_counter()
    log, plants, decoys = generate(mb, seed, brokered, profile)
    gen = time.perf_counter() - t0
    size_mb = len(log) / 1e6
    records = _records(log)
    print(f"[{profile}] generated {size_mb:.1f} MB of git log -p in {gen:.1f} s: {len(records)} commits, "
          f"{len(plants)} secrets planted on added lines, {decoys} decoys on removed/context lines")
    scanner = SecretScanner([BrokeredSecret(BROKERED_SLOT, brokered)])

    gc.disable()
    try:
        raw = _time_raw(scanner, records, runs)
        gate, findings = _time_gate(scanner, log, runs)
        if compare:
            module = _load_module(compare)
            candidate = module.SecretScanner([module.BrokeredSecret(BROKERED_SLOT, brokered)])  # type: ignore[attr-defined]
            cand_raw = _time_raw(candidate, records, runs)
            cand_gate, cand_findings = _time_gate(candidate, log, runs)
    finally:
        gc.enable()
    print(f"cpu: 1 core (pid {os.getpid()}), python {sys.version.split()[0]}, best of {runs}")
    by_rule: dict[str, int] = {}
    for p in plants:
        by_rule[p.rule] = by_rule.get(p.rule, 0) + 1
    print("planted by rule: " + ", ".join(f"{k} {v}" for k, v in sorted(by_rule.items())))
    print("current core/secretscan.py:")
    bad = _report(size_mb, raw, gate, findings, plants)
    if compare:
        raw_same = sum(
            [(f.kind, f.start, f.end, f.encoding, f.slot) for f in scanner.scan(p, "x")]
            != [(f.kind, f.start, f.end, f.encoding, f.slot) for f in candidate.scan(p, "x")]
            for _sha, p in records
        )
        print(f"candidate {compare}:")
        _report(size_mb, cand_raw, cand_gate, cand_findings, plants)
        print(f"  same raw findings as the current scanner: "
              f"{'yes' if not raw_same else f'NO, in {raw_same} of {len(records)} commits'}")
    return bad


def _report(size_mb: float, raw: float, gate: float, findings: list, plants: set[Plant]) -> int:
    found = {Plant(f.path, f.line, f.rule) for f in findings}
    missed = plants - found
    # A plant may legitimately produce a second finding of another rule on its
    # own line (an AWS key id right next to its secret); anything elsewhere is false.
    planted_lines = {(p.path, p.line) for p in plants}
    false = {f for f in found - plants if (f.path, f.line) not in planted_lines}
    extra_same_line = {f for f in found - plants if (f.path, f.line) in planted_lines}
    met = "met" if size_mb / gate >= TARGET_MBS else "NOT met"
    print(f"  scanner alone               : {size_mb / raw:7.1f} MB/s  ({raw:.2f} s)")
    print(f"  gate path (split+scan_patch): {size_mb / gate:7.1f} MB/s  ({gate:.2f} s)  target >= {TARGET_MBS:.0f} MB/s: {met}")
    print(f"  findings: {len(findings)} reported; planted {len(plants)}, found {len(plants) - len(missed)}, "
          f"missed {len(missed)}; false positives {len(false)}; extra rules on planted lines {len(extra_same_line)}")
    for p in sorted(missed, key=lambda p: (p.path, p.line))[:10]:
        print(f"    MISSED {p.path}:{p.line} {p.rule}")
    for p in sorted(false, key=lambda p: (p.path, p.line))[:10]:
        print(f"    FALSE  {p.path}:{p.line} {p.rule}")
    return 1 if missed or false else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile", choices=[*PROFILES, "both"], default="both")
    parser.add_argument("--compare-module", metavar="PATH", help="a changed copy of core/secretscan.py to time as well")
    args = parser.parse_args()
    profiles = list(PROFILES) if args.profile == "both" else [args.profile]
    return max(run(args.mb, args.seed, args.runs, p, args.compare_module) for p in profiles)


if __name__ == "__main__":
    sys.exit(main())
