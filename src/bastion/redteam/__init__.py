"""Red team: attack campaigns (probes × converters) against a target, scored, stored, reported.

targets.py     what is attacked: `build_target(spec, settings).send(messages) -> TargetResponse`
probes/        attack families (registry `probes`), declarative classes
converters/    prompt transformations that compose with any probe (registry `converters`)
scorers/       harm, refusal, judge, and the verdict rule (registry `scorers`)
campaign.py    the campaign spec (TOML), the plan, the run loop, resume
engines.py     where attempts execute: thread, process, ray (registry `engines`)
report.py      HTML / JSONL / JSON summary, and `diff` between runs
api.py, cli.py the API routes and the `bastion redteam` commands
"""
