#!/bin/sh
# Seed represent-boundaries as its docs say: a shapefile and its definition.py under
# BOUNDARIES_SHAPEFILES_DIR, then `manage.py loadshapefiles`. The shapefile is made here from a
# GeoJSON grid of 12 wards (ogr2ogr, from gdal-bin).
set -eu
python="$1"
"$python" - <<'PY'
import json
features = []
for i in range(4):
    for j in range(3):
        x, y = -75.8 + i * 0.05, 45.3 + j * 0.05
        ring = [[x, y], [x + 0.05, y], [x + 0.05, y + 0.05], [x, y + 0.05], [x, y]]
        features.append({"type": "Feature", "properties": {"NAME": f"Ward {i * 3 + j + 1}", "WARD_ID": str(i * 3 + j + 1)},
                         "geometry": {"type": "Polygon", "coordinates": [ring]}})
json.dump({"type": "FeatureCollection", "features": features}, open("shapefiles/wards/wards.geojson", "w"))
PY
ogr2ogr -f "ESRI Shapefile" -a_srs EPSG:4326 shapefiles/wards/wards.shp shapefiles/wards/wards.geojson
rm shapefiles/wards/wards.geojson
"$python" manage.py loadshapefiles
