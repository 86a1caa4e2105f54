# JupyterLab as scripts/lab.sh starts it (`--config jupyter_server_config.py`): the kit's notebooks are saved as they
# are committed (no outputs, no execution counts, no language_info), so opening and running one leaves `git status`
# clean. Results live in outputs/ (the notebook writes them), not in the notebook. Other notebooks are saved as usual.
# (The nbstripout git filter that scripts/bootstrap.sh installs does the same for notebooks saved by other editors;
# git status may still list those as modified, since git compares file sizes before it runs a filter.)


def _save_notebooks_as_committed(model, path, contents_manager, **kwargs):
    if model.get("type") != "notebook" or not str(path).lstrip("/").startswith("notebooks/"):
        return
    nb = model["content"]
    nb.get("metadata", {}).pop("language_info", None)
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("execution", None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None


c.FileContentsManager.pre_save_hook = _save_notebooks_as_committed  # noqa: F821 (c: the config object Jupyter passes)
