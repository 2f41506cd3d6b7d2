"""The words and fixed objects a simulated catalog is made of: Spanish listings as Dropi has them.

Titles are built from a noun, a qualifier and sometimes an extra; the categories repeat one
name in two spellings (`Tecnologia` / `tecnologia`) as the real catalog does.
"""

from __future__ import annotations

from typing import Any

NOUNS = [
    "Audífonos",
    "Parlante",
    "Linterna",
    "Reloj",
    "Cámara",
    "Lámpara",
    "Mochila",
    "Buzo",
    "Chaqueta",
    "Organizador",
    "Cargador",
    "Soporte",
    "Termo",
    "Botella",
    "Masajeador",
    "Cepillo",
    "Secador",
    "Plancha",
    "Báscula",
    "Humidificador",
    "Proyector",
    "Teclado",
    "Mouse",
    "Bolso",
    "Gorra",
    "Camiseta",
    "Sandalias",
    "Tenis",
    "Almohada",
    "Cobija",
]
QUALIFIERS = [
    "inalámbrico",
    "LED",
    "recargable",
    "portátil",
    "para moto",
    "de cuello alto",
    "reflectivo",
    "antideslizante",
    "ergonómico",
    "térmico",
    "magnético",
    "plegable",
    "con Bluetooth",
    "niño",
    "niña",
    "unisex",
    "económico",
    "premium",
    "3 en 1",
    "táctil",
]
EXTRAS = ["", "", "", "", " 🔥", " ✨", " ¡Oferta!", " x2", " Pro", " Mini", " (Nuevo)"]
CATEGORIES = [
    "Tecnologia",
    "Vehículos",
    "Hogar",
    "Moda",
    "Deportes",
    "Bienestar",
    "Camping",
    "Natural Home",
    "Otro",
    "Mascotas",
    "Belleza",
    "Juguetes",
    "Cocina",
    "tecnologia",
]
FIRST_NAMES = [
    "Walter",
    "Sebastián",
    "María José",
    "Andrés",
    "Lucía",
    "Óscar",
    "Camila",
    "Jhon",
    "Natalia",
    "Peña",
    "Vietech",
    "Ana",
    "Julián",
    "Valentina",
    "Sofía",
    "Germán",
]
STORES = [
    "WG TECNOLOGIA",
    "SEBCOL DISTRIBUCIONES",
    "Importadora Andina",
    "La Bodega Ñ",
    "Distribuciones Oriente",
    "Tienda Fácil",
    "MegaStock",
    "Comercializadora Éxito Total",
]
CITIES = [
    (56, "BUCARAMANGA"),
    (1, "BOGOTÁ"),
    (2, "MEDELLÍN"),
    (3, "CALI"),
    (4, "BARRANQUILLA"),
    (5, "CÚCUTA"),
    (6, "PEREIRA"),
    (7, "IBAGUÉ"),
]
ATTRIBUTES = [
    ("TALLA", ["S", "M", "L", "XL", "S - DAMA", "M - DAMA"]),
    ("COLOR", ["AZUL REY", "ROJO", "NEGRO", "BLANCO", "VERDE MENTA", "ROSADO"]),
]
PLAN: dict[str, Any] = {
    "id": 4,
    "name": "SUPPLIER PREMIUM",
    "type": "SUPPLIER",
    "active": True,
    "created_at": None,
    "deleted_at": None,
    "updated_at": "2022-07-05T18:12:09",
    "description": "El proveedor gestiona su logística pero genera la guía con el sistema de "
    "dropi, y no se le cobra comision",
    "white_brand_id": 1,
    "use_fullfillment": False,
    "supplier_commission": None,
    "wb_comission_amount": None,
    "wb_pay_comission_to": None,
    "auto_manage_delivery": True,
    "commission_product_supplier": 0,
    "dropi_percent_product_drops": 5,
    "dropi_percent_product_supplier": 0,
    "dropi_shipping_increment_amount": 1000,
    "profit_percentage_orders_influencers": 0,
    "ignore_dropi_percent_product_supplier": False,
    "dropi_product_supplier_increment_fixed": False,
}
PLAN_NAMES = ["SUPPLIER PREMIUM", "SUPPLIER", "SUPPLIER PLUS"]

PREFIXES = ["", "", "", "Nuevo ", "Kit ", "Original ", "Set "]
