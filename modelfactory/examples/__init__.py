"""Small examples shipped inside the package, so the shipped configs that use them (``custom_callable``)
run from an installed wheel, where a clone's ``examples/`` folder does not exist."""
