"""Fields: frames of one sky field across filters, grouped, aligned onto one grid, composed.

* ``geometry``: a frame's footprint (grid, celestial WCS, coverage) and overlaps between footprints;
* ``grouping``: the overlap graph's connected components, one frame per filter, the reference frame;
* ``align``: the memory estimate and ``reproject`` onto the field's grid, masks with the pixels.

Nothing is imported here, so that the product types can use ``geometry`` without a cycle.
"""
