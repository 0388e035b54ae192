#!/usr/bin/env python3
"""The texts of the embedding benchmarks: 32 short customer questions and 32 FAQ answers.

    scripts/bench-texts.py REPO OUT.json

Writes {"queries": [...], "answers": [...]} (raw texts, no prefixes), the file
`kefu model bench --texts` reads. Used by scripts/bench-vs-c-engine.sh (both engines embed
these) and scripts/loadtest.sh (the offline figures its served ones are compared with).
"""
import json
import sys

repo, out = sys.argv[1], sys.argv[2]
qs = [json.loads(l) for l in open(f"{repo}/tests/fixtures/demo_questions.jsonl", encoding="utf-8") if l.strip()]
# Short questions, round-robin over language and style so that Chinese, English and
# mixed-language ones all appear.
groups = {}
for q in qs:
    if q["style"] != "out-of-scope" and len(q["question"]) <= 40:
        groups.setdefault((q["locale"], q["style"]), []).append(q["question"])
order = [("zh-CN", "short"), ("en", "paraphrase"), ("zh-CN", "mixed"), ("zh-CN", "colloquial"),
         ("en", "typo"), ("zh-CN", "paraphrase"), ("en", "short"), ("zh-CN", "typo")]
queries, i = [], 0
while len(queries) < 32:
    for key in order:
        if i < len(groups.get(key, [])) and len(queries) < 32:
            queries.append(groups[key][i])
    i += 1
answers = [json.loads(l)["answer"] for l in open(f"{repo}/src/demo/answers.jsonl", encoding="utf-8") if l.strip()]
# 32 answers spread over the whole library (Chinese and English, all categories).
answers = [answers[k * len(answers) // 32] for k in range(32)]
json.dump({"queries": queries, "answers": answers}, open(out, "w", encoding="utf-8"), ensure_ascii=False, indent=0)
print(f"      texts: {len(queries)} queries (mean {sum(map(len, queries)) / 32:.0f} chars), "
      f"{len(answers)} answers (mean {sum(map(len, answers)) / 32:.0f} chars)", file=sys.stderr)
