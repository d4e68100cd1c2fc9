"""A plug-in localizer for xai-loc (see xailoc_demo.model)."""
