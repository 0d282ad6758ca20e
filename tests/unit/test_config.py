"""routes.yaml read and checked in process: keys, values, environments, line numbers (the CLI around it:
tests/integration/test_check_command.py)."""

import pytest

from splitter import config

VALID = """environment: production
backends:
  legacy: {url: "http://127.0.0.1:8001"}
  new: {url: "http://127.0.0.1:8002", connect_timeout: 1, read_timeout: 3}
user_id:
  - header: X-User-ID
routes:
  - name: auth
    prefix: /api/auth
    percent: {development: 100, staging: 100, production: 10}
  - name: upload
    prefix: /api/upload/
    percent: 0
    salt: s1
  - name: auth_admin
    prefix: /api/auth/admin
    percent: {development: 0, staging: 0, production: 0}
unmatched: new
"""


def test_valid_file_loads_into_frozen_objects():
    cfg = config.parse(VALID)
    assert cfg.environment == "production"
    assert cfg.by_name["auth"].percent == 10
    assert cfg.by_name["upload"].prefix == "/api/upload"
    assert cfg.backends["new"].read_timeout == 3.0
    assert cfg.unmatched == "new"
    with pytest.raises(AttributeError):
        cfg.routes[0].percent = 50  # type: ignore[misc]


def test_check_request_id_is_off_unless_a_backend_turns_it_on():
    cfg = config.parse(VALID.replace("read_timeout: 3}", "read_timeout: 3, check_request_id: true}"))
    assert cfg.backends["new"].check_request_id is True and cfg.backends["legacy"].check_request_id is False


def test_environment_override_picks_the_map_entry():
    assert config.parse(VALID, environment="staging").by_name["auth"].percent == 100


@pytest.mark.parametrize(
    "path,route",
    [("/api/auth", "auth"), ("/api/auth/", "auth"), ("/api/auth/login", "auth"), ("/api/authx", None), ("/api/auth/admin/x", "auth_admin"), ("/api/auth/adminx", "auth"), ("/api/upload", "upload"), ("/api/upload/1", "upload"), ("/", None)],
)
def test_longest_prefix_on_segment_boundaries(path, route):
    r = config.parse(VALID).match(path)
    assert (r.name if r else None) == route


def line_of(text: str, needle: str) -> int:
    """Line number where needle (possibly several lines) starts."""
    return text[: text.index(needle)].count("\n") + 1


@pytest.mark.parametrize(
    "change,needle,message",
    [
        (("percent: 0\n    salt", "percent: 150\n    salt"), "percent: 150", "routes[1].percent: must be a number 0..100 with at most two decimals, got 150"),
        (("unmatched: new", "unmatched: new\ncolour: blue"), "colour: blue", "colour: unknown key"),
        (("    salt: s1", "    salt: s1\n    weight: 3"), "weight: 3", "routes[1].weight: unknown key"),
        (("name: upload", "name: auth"), "name: auth\n    prefix: /api/upload", "routes[1].name: duplicate name 'auth'"),
        (("production: 10}", "production: 10}".replace("production", "prod")), "prod: 10", "routes[0].percent: no value for environment 'production'"),
        (('"http://127.0.0.1:8002"', '"ftp//nowhere"'), "ftp//nowhere", "backends.new.url: must be an origin"),
        (("prefix: /api/upload/", "prefix: /api/auth"), "prefix: /api/auth\n    percent: 0", "routes[1].prefix: duplicate prefix '/api/auth'"),
        (("{development: 0, staging: 0, production: 0}", "{staging: 0, production: 0}"), "staging: 0, production: 0", "routes[2].percent: percent maps must all name the same environments"),
        (
            ("read_timeout: 3}", "read_timeout: 3, check_request_id: yes please}"),
            "check_request_id",
            "backends.new.check_request_id: must be true or false, got 'yes please'",
        ),
    ],
)
def test_errors_name_file_line_and_key_path(tmp_path, change, needle, message):
    text = VALID.replace(*change)
    assert text != VALID
    f = tmp_path / "routes.yaml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    line = line_of(text, needle)
    assert any(e.startswith(f"{f}:") and message in e for e in err.value.errors), err.value.errors
    hit = next(e for e in err.value.errors if message in e)
    assert hit.split(":")[1] == str(line), (hit, line)


def test_bad_percent_reads_exactly_like_the_spec_example(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID.replace("percent: 0\n    salt", "percent: 150\n    salt"))
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert err.value.errors == [f"{f}:13: routes[1].percent: must be a number 0..100 with at most two decimals, got 150"]


def test_rollout_steps_may_wait_for_approval(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text(
        VALID.replace(
            "    salt: s1",
            "    salt: s1\n    rollout: {steps: [10, {percent: 50, approval: true}, {percent: 75}, 100]}",
        )
    )
    ro = config.load(f).by_name["upload"].rollout
    assert ro is not None and ro.steps == (10, 50, 75, 100) and ro.approval == frozenset({1})


@pytest.mark.parametrize(
    "steps,message",
    [
        (
            "[10, {percent: 50, approval: yes please}]",
            "routes[1].rollout.steps[1].approval: must be true or false, got 'yes please'",
        ),
        ("[10, {pct: 50}]", "routes[1].rollout.steps[1].pct: unknown key (allowed: approval, percent)"),
        ("[{percent: 50, approval: true}, 20]", "routes[1].rollout.steps: must be a rising list of percents up to 100"),
    ],
)
def test_bad_rollout_steps_name_the_step(tmp_path, steps, message):
    f = tmp_path / "routes.yaml"
    text = VALID.replace("    salt: s1", f"    salt: s1\n    rollout: {{steps: {steps}}}")
    f.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    hit = next((e for e in err.value.errors if message in e), None)
    assert hit is not None and hit.split(":")[1] == str(line_of(text, "rollout:")), err.value.errors


@pytest.mark.parametrize("text", ["", "   \n", "[1, 2]", "routes: [\n", "backends: {}\nroutes: []"])
def test_empty_or_broken_files_are_rejected_whole(text):
    with pytest.raises(config.ConfigError) as err:
        config.parse(text)
    assert all(e.startswith("routes.yaml:") for e in err.value.errors)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError) as err:
        config.load(tmp_path / "nope.yaml")
    assert "not found" in str(err.value)


def test_redis_sentinel_section_loads():
    cfg = config.parse(VALID + 'redis: {sentinels: ["s1:26379", "10.0.0.2:26380"], service: mymaster, db: 2, password_env: REDIS_PW, username_env: REDIS_USER, tls: true}\n')
    assert cfg.redis_url is None
    assert cfg.redis_ha == config.RedisHA((("s1", 26379), ("10.0.0.2", 26380)), "mymaster", 2, "REDIS_PW", "REDIS_USER", True)


@pytest.mark.parametrize(
    "redis,message",
    [
        ('{sentinels: ["s1:26379"]}', "redis.service: required with sentinels"),
        ("{service: mymaster}", "redis.sentinels: required with service"),
        ('{url: "redis://r:6379/0", sentinels: ["s1:26379"], service: m}', "redis: set either url or sentinels, not both"),
        ('{sentinels: ["s1"], service: m}', 'redis.sentinels[0]: must be "host:port", got \'s1\''),
        ("{url: redis://r:6379/0, db: -1}", "redis.db: must be an integer >= 0, got -1"),
        ('{url: redis://r:6379/0, password_env: "not a name"}', "redis.password_env: must name an environment variable"),
        ("{url: redis://r:6379/0, tls: yes please}", "redis.tls: must be true or false"),
    ],
)
def test_redis_section_mistakes_are_one_line_each(tmp_path, redis, message):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID + f"redis: {redis}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert any(e.startswith(f"{f}:19: ") and message in e for e in err.value.errors), err.value.errors


@pytest.mark.parametrize(
    "extra,needle,message",
    [
        ("notify:\n  - {format: json}", "- {format: json}", "notify[0]: needs one of url or url_env"),
        ('notify:\n  - {url: "ftp://x", format: json}', "- {url:", "notify[0].url: must be an http(s):// URL"),
        ("notify:\n  - {url_env: 9BAD}", "- {url_env", "notify[0].url_env: must be an environment variable name"),
        ('notify:\n  - {url: "http://h", events: [deploy]}', "- {url", "notify[0].events: must be a list of set"),
        ('notify:\n  - {url: "http://h",\n     format: teams}', "format: teams", "notify[0].format: must be json or"),
        ("admin: {reads: closed}", "admin:", "admin.reads: must be open or token, got 'closed'"),
        ("admin: {single_token: no-thanks}", "admin:", "admin.single_token: must be true or false, got 'no-thanks'"),
    ],
)
def test_notify_and_admin_mistakes_name_file_line_and_key_path(tmp_path, extra, needle, message):
    text = VALID + extra + "\n"
    f = tmp_path / "routes.yaml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    hit = next((e for e in err.value.errors if message in e), None)
    line = line_of(text, needle)
    assert hit is not None and hit.split(":")[1] == str(line), (err.value.errors, line)


def test_notify_targets_and_admin_reads_load():
    notify = 'notify:\n  - {url: "https://hooks.example/x", events: [kill, guard_trip]}\n'
    notify += "  - {url_env: SLACK_URL, format: slack}"
    cfg = config.parse(VALID + notify + "\nadmin: {reads: token}\n")
    assert cfg.notify == (
        config.NotifyTarget("https://hooks.example/x", None, ("kill", "guard_trip"), "json"),
        config.NotifyTarget(None, "SLACK_URL", (), "slack"),
    )
    assert cfg.admin_reads == "token" and cfg.secret_names() == ["SLACK_URL"] and cfg.notify[1].label == "$SLACK_URL"
    assert config.parse(VALID).admin_reads == "open" and config.parse(VALID).notify == ()
    assert config.parse(VALID).admin_single_token is True
    assert config.parse(VALID + "\nadmin: {single_token: false}\n").admin_single_token is False


def test_the_new_rollout_keys_load_with_their_defaults(tmp_path):
    f = tmp_path / "routes.yaml"
    extra = "max_wait_s: 600, gates: {max_p95_ratio: 1.1, no_new_errors: true, no_new_errors_statuses: [307]}"
    f.write_text(VALID.replace("    salt: s1", f"    salt: s1\n    rollout: {{steps: [10, 100], {extra}}}"))
    ro = config.load(f).by_name["upload"].rollout
    assert ro is not None and ro.max_wait_s == 600
    assert ro.gates.no_new_errors and ro.gates.no_new_errors_statuses == (307,) and ro.gates.p95_tolerance_ms == 5.0


def test_bake_s_and_retire_after_s_load_with_their_defaults_and_bad_values_name_the_key(tmp_path):
    f = tmp_path / "routes.yaml"
    rollout = "    salt: s1\n    rollout: {{steps: [10, 100]{keys}}}"
    f.write_text(VALID.replace("    salt: s1", rollout.format(keys="")))
    ro = config.load(f).by_name["upload"].rollout
    assert ro is not None and ro.bake_s == 0 and ro.retire_after_s == 259200
    f.write_text(VALID.replace("    salt: s1", rollout.format(keys=", bake_s: 10, retire_after_s: 5")))
    ro = config.load(f).by_name["upload"].rollout
    assert ro is not None and ro.bake_s == 10 and ro.retire_after_s == 5
    f.write_text(VALID.replace("    salt: s1", rollout.format(keys=", bake_s: -1, retire_after_s: 0")))
    with pytest.raises(config.ConfigError) as exc:
        config.load(f)
    said = "\n".join(exc.value.errors)
    assert "routes[1].rollout.bake_s: must be a number >= 0 (seconds; 0: no bake), got -1" in said
    assert "routes[1].rollout.retire_after_s: must be a number > 0, got 0" in said


@pytest.mark.parametrize(
    "gates,message",
    [
        ("{p95_tolerance_ms: -1}", "routes[1].rollout.gates.p95_tolerance_ms: must be a number of milliseconds >= 0"),
        ("{no_new_errors: yes please}", "routes[1].rollout.gates.no_new_errors: must be true or false"),
        ("{no_new_errors_statuses: [99]}", "routes[1].rollout.gates.no_new_errors_statuses: must be a list of HTTP"),
    ],
)
def test_bad_gate_keys_name_the_key(tmp_path, gates, message):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID.replace("    salt: s1", f"    salt: s1\n    rollout: {{steps: [10], gates: {gates}}}"))
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert any(message in e for e in err.value.errors), err.value.errors


def test_max_mismatch_rate_needs_a_shadow_section(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID.replace("    salt: s1", "    salt: s1\n    rollout: {steps: [10], gates: {max_mismatch_rate: 0.01}}"))
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert any("routes[1].rollout.gates.max_mismatch_rate: judges the route's shadow comparisons" in e
               for e in err.value.errors), err.value.errors


def test_before_step_hooks_load_and_a_bad_url_is_named(tmp_path):
    f = tmp_path / "routes.yaml"
    hooks = "before_step: [{url: 'http://smoke:9000/run', timeout_s: 30}, {url: 'ftp://x'}]"
    f.write_text(VALID.replace("    salt: s1", f"    salt: s1\n    rollout: {{steps: [10], {hooks}}}"))
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert any("routes[1].rollout.before_step[1].url: must be an http(s):// URL" in e for e in err.value.errors)
    f.write_text(VALID.replace("    salt: s1", "    salt: s1\n    rollout: {steps: [10], before_step: [{url: 'http://s/r'}]}"))
    ro = config.load(f).by_name["upload"].rollout
    assert ro is not None and ro.before_step == (config.Hook("http://s/r", 60.0, 2),)


def test_prometheus_gates_load_and_need_a_bound(tmp_path):
    f = tmp_path / "routes.yaml"
    gate = "{name: logins, query: 'sum(rate(ok{backend=\"{role}\"}[5m]))', min_ratio: 0.98}"
    f.write_text(VALID.replace("    salt: s1", f"    salt: s1\n    rollout: {{steps: [10], gates: {{prometheus: [{gate}]}}}}"))
    ro = config.load(f).by_name["upload"].rollout
    assert ro is not None and ro.gates.prometheus == (
        config.PromGate("logins", 'sum(rate(ok{backend="{role}"}[5m]))', min_ratio=0.98),
    )
    f.write_text(VALID.replace("    salt: s1", "    salt: s1\n    rollout: {steps: [10], gates: {prometheus: [{name: x, query: up}]}}"))
    with pytest.raises(config.ConfigError) as err:
        config.load(f)
    assert any("routes[1].rollout.gates.prometheus[0]: needs one of min_ratio" in e for e in err.value.errors)



def _with(section: str) -> str:
    """VALID with `section`: at the top level when it starts there, else in the upload route."""
    return VALID + section + "\n" if not section.startswith(" ") else VALID.replace("    salt: s1", f"    salt: s1\n{section}")


@pytest.mark.parametrize(
    "section,key_path,example,entry",
    [
        ("notify: {}", "notify", "[{url: https://..., format: json}]", "{url: 'https://h', colour: red}"),
        ("    rollout: {{steps: [10], before_step: {}}}", "routes[1].rollout.before_step", "[{url: http://smoke/run,",
         "{url: 'http://s/r', colour: red}"),
        ("    rollout: {{steps: [10], gates: {{prometheus: {}}}}}", "routes[1].rollout.gates.prometheus",
         "[{name: logins,", "{name: g, query: up, min: 1, colour: red}"),
        ("    cohorts: {}", "routes[1].cohorts", "[{name: staff, header: X-Staff,",
         "{name: s, header: X-S, equals: '1', to: new, colour: red}"),
    ],
)
def test_a_list_of_mappings_shows_an_example_when_not_a_list_and_checks_each_entry(
    tmp_path, section, key_path, example, entry
):
    """notify, before_step, prometheus gates and cohorts: each a list of mappings, checked alike."""
    f = tmp_path / "routes.yaml"
    for value, expected in [
        ("x", [f"{key_path}: must be a list like {example}"]),
        (f"[{entry}, 7]", [f"{key_path}[0].colour: unknown key", f"{key_path}[1]: must be a mapping, got 7"]),
    ]:
        f.write_text(_with(section.format(value)))
        with pytest.raises(config.ConfigError) as err:
            config.load(f)
        for message in expected:
            assert any(message in e for e in err.value.errors), (message, err.value.errors)
