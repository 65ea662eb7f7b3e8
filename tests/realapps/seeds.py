"""Each project's own seed, as a project would run it (``python -m django shell -c``): rows made through the
applications' models, files through their FileFields (so into MEDIA_ROOT)."""

GEO = """
from django.contrib.gis.geos import MultiPolygon, Point, Polygon
from django.core.files.base import ContentFile
from mapbox_baselayer.models import BaseLayerTile, MapBaseLayer, PMTile
from cities.models import AlternativeName, City, Continent, Country, District, PostalCode, Region

for n in range(4):
    layer = MapBaseLayer.objects.create(
        name=f"Layer {n}", order=n, base_layer_type="raster", min_zoom=n, max_zoom=18, tile_size=256,
        attribution=f"Seeded layer {n}",
    )
    layer.save()  # the application's second save gives the final slug
    BaseLayerTile.objects.create(base_layer=layer, url=f"https://tiles{n}.example.com/{{z}}/{{x}}/{{y}}.png")
    for m in range(3):
        tiles = PMTile(
            name=f"Set {n}.{m}", layer=layer, min_zoom=m, max_zoom=14 + m, notes=f"seeded {n}.{m}",
            bbox=Polygon.from_bbox((n, m, n + 1.5, m + 0.25)),
        )
        archive = ContentFile(b"PMTiles" + bytes([3, n, m]) * 200)
        tiles.pmtiles_file.save(f"set-{n}-{m}.pmtiles", archive, save=False)
        style = ContentFile(b'{"version": 8, "n": %d}' % (n * 10 + m))
        tiles.pmtiles_style.save(f"set-{n}-{m}.json", style, save=False)
        tiles.save()

europe = Continent.objects.get(code="EU")  # made by the application's migrations
countries = [("BE", "BEL", "Belgium"), ("PT", "PRT", "Portugal"), ("FI", "FIN", "Finland")]
for c, (code, code3, name) in enumerate(countries):
    country = Country.objects.create(
        name=name, slug=name.lower(), code=code, code3=code3, population=10_000_000 + c, continent=europe,
        phone=str(32 + c), tld=code.lower(), postal_code_format="####", postal_code_regex=r"^\\d{4}$", capital="",
    )
    region = Region.objects.create(name=f"{name} region", name_std=f"{name} region", code=f"{code}1", country=country)
    for k in range(25):
        city = City.objects.create(
            name=f"{name} city {k}", name_std=f"{name} city {k}", country=country, region=region,
            location=Point(4.0 + c + k / 100, 50.0 - c - k / 1000, srid=4326), population=1000 * k + c,
            elevation=k, kind="PPL", timezone="Europe/Brussels",
        )
        alias = AlternativeName.objects.create(name=f"{name} town {k}", language_code="en")
        city.alt_names.add(alias)
        District.objects.create(
            name=f"{name} district {k}", name_std=f"{name} district {k}", city=city, population=k,
            location=Point(4.5 + c + k / 100, 50.5 - c, srid=4326),
        )
        PostalCode.objects.create(
            name=f"{name} {1000 + k}", code=str(1000 + k), country=country, region=region, city=city,
            location=Point(5.0 + c, 51.0 + k / 100, srid=4326), region_name=region.name, subregion_name="",
            district_name="",
        )
"""

CMS = """
from io import BytesIO

from django.contrib.auth import get_user_model
from django.core.files.images import ImageFile
from PIL import Image as PILImage
from wagtail.images.models import Image
from wagtail.models import Page

home = Page.objects.get(depth=2)
for n in range(30):
    home.add_child(instance=Page(title=f"Seeded page {n}", slug=f"seeded-{n}"))
for n in range(6):
    buffer = BytesIO()
    PILImage.new("RGB", (8 + n, 6 + n), (40 * n, 200 - 20 * n, 90)).save(buffer, "PNG")
    Image.objects.create(title=f"Seeded image {n}", file=ImageFile(buffer, name=f"seeded-{n}.png"))
for n in range(10):
    get_user_model().objects.create_user(f"editor{n}", f"editor{n}@example.com", "a-password")
"""
