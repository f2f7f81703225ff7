"""Role assignment: roles r_1..r_n = LLM(D, T), generated once per task and cached.

Static roles (``roles``, else the built-in personas) are used when no task description D is
given. Generated roles are cached in the graph's store if it has one, else in a file of the
cache folder, keyed by D, T, n and the role model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from langgraph.runtime import Runtime

from smoa_graph.config import SMoAConfig
from smoa_graph.nodes.kit import NodeKit
from smoa_graph.paths import cache_dir
from smoa_graph.prompts import render
from smoa_graph.schemas import roles_format, roles_schema
from smoa_graph.state import CallRecord

STORE_NAMESPACE = ("smoa_graph", "roles")


def roles_cache_path(cfg: SMoAConfig) -> Path:
    """File holding roles generated for this task description, requirement, n and model."""
    folder = Path(cfg.roles_cache_dir) if cfg.roles_cache_dir else cache_dir() / "roles"
    key = json.dumps(
        [cfg.task_description, cfg.task_requirement, cfg.n_proposers, cfg.model_for("roles")]
    )
    return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


async def settle_roles(
    kit: NodeKit, cfg: SMoAConfig, runtime: Runtime[Any]
) -> tuple[list[str], list[CallRecord]]:
    """Static roles, or roles generated once from (D, T) and cached; with the calls made."""
    if cfg.roles or not cfg.task_description:
        return cfg.role_prompts_static(), []
    path = roles_cache_path(cfg)
    if runtime.store is not None:
        item = await runtime.store.aget(STORE_NAMESPACE, path.stem)
        if item is not None:
            return list(item.value["roles"]), []
    elif path.is_file():
        return list(json.loads(path.read_text(encoding="utf-8"))["roles"]), []
    roles, calls = await generate_roles(kit, cfg)
    if runtime.store is not None:
        await runtime.store.aput(STORE_NAMESPACE, path.stem, {"roles": roles})
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"roles": roles}, indent=1), encoding="utf-8")
    return roles, calls


async def generate_roles(kit: NodeKit, cfg: SMoAConfig) -> tuple[list[str], list[CallRecord]]:
    """Ask the role model for n roles; missing or empty ones are filled with static roles."""
    n = cfg.n_proposers
    text = render(
        "roles",
        n=n,
        task_description=cfg.task_description,
        task_requirement=cfg.task_requirement or "answer correctly and helpfully",
        format=roles_format(n),
    )
    data, calls = await kit.control_call(cfg, "roles", 0, text, roles_schema(n))
    generated = [str(r).strip() for r in (data or {}).get("roles", []) if str(r).strip()][:n]
    static = cfg.role_prompts_static()
    return generated + static[len(generated) :], calls
