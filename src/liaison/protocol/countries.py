"""Countries of aircraft and vessels: which State an ICAO 24-bit aircraft address was allocated
to, and which country or geographical area a Maritime Identification Digits (MID) value belongs
to. Pure data and look-ups (docs/feeds.md, "Rules by country").

Sources (facts, written out here by hand; no file was copied):

- ICAO Annex 10, Volume III, Part I, Chapter 9, Appendix to Chapter 9, "A world-wide scheme for
  the allocation, assignment and application of aircraft addresses", Table 9-1 "Allocation of
  aircraft addresses to States". A State assigns addresses from its block(s) to its aircraft
  (civil and military). Blocks given to ICAO itself (``F00000``-``F07FFF`` temporary addresses,
  ``F09000``-``F093FF`` special use) belong to no State and are not listed. One block not in the
  table is listed: ``899000``-``8993FF``, the addresses of aircraft registered in Taiwan.
- ITU-R M.585 (assignment and use of identities in the maritime mobile service) and the ITU's
  Table of Maritime Identification Digits (ITU MARS, "MID table"): the MIDs of each country or
  geographical area.

Countries are ISO 3166-1 alpha-2 codes. A geographical area the ITU lists on its own and that has
its own ISO code has that code (Greenland ``GL``, Faroe Islands ``FO``, Gibraltar ``GI``, Puerto
Rico ``PR``, Hong Kong ``HK``, ...); an area that is part of a State without a code of its own
has the State's (Alaska ``US``, Azores and Madeira ``PT``). The French Southern Territories' MIDs
(Adelie Land, Crozet, Kerguelen, Saint Paul and Amsterdam) are ``TF``; MID 306 (Bonaire, Sint
Eustatius and Saba, Curacao, Sint Maarten) belongs to ``BQ``, ``CW`` and ``SX``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping

# ICAO Annex 10 Vol. III, Part I, Chapter 9, Appendix, Table 9-1: (first, last, country), sorted
# and not overlapping (tests/unit/feeds/test_countries.py checks both).
ICAO_BLOCKS: tuple[tuple[int, int, str], ...] = (
    (0x004000, 0x0043FF, "ZW"),  # Zimbabwe
    (0x006000, 0x006FFF, "MZ"),  # Mozambique
    (0x008000, 0x00FFFF, "ZA"),  # South Africa
    (0x010000, 0x017FFF, "EG"),  # Egypt
    (0x018000, 0x01FFFF, "LY"),  # Libya
    (0x020000, 0x027FFF, "MA"),  # Morocco
    (0x028000, 0x02FFFF, "TN"),  # Tunisia
    (0x030000, 0x0303FF, "BW"),  # Botswana
    (0x032000, 0x032FFF, "BI"),  # Burundi
    (0x034000, 0x034FFF, "CM"),  # Cameroon
    (0x035000, 0x0353FF, "KM"),  # Comoros
    (0x036000, 0x036FFF, "CG"),  # Congo
    (0x038000, 0x038FFF, "CI"),  # Cote d'Ivoire
    (0x03E000, 0x03EFFF, "GA"),  # Gabon
    (0x040000, 0x040FFF, "ET"),  # Ethiopia
    (0x042000, 0x042FFF, "GQ"),  # Equatorial Guinea
    (0x044000, 0x044FFF, "GH"),  # Ghana
    (0x046000, 0x046FFF, "GN"),  # Guinea
    (0x048000, 0x0483FF, "GW"),  # Guinea-Bissau
    (0x04A000, 0x04A3FF, "LS"),  # Lesotho
    (0x04C000, 0x04CFFF, "KE"),  # Kenya
    (0x050000, 0x050FFF, "LR"),  # Liberia
    (0x054000, 0x054FFF, "MG"),  # Madagascar
    (0x058000, 0x058FFF, "MW"),  # Malawi
    (0x05A000, 0x05A3FF, "MV"),  # Maldives
    (0x05C000, 0x05CFFF, "ML"),  # Mali
    (0x05E000, 0x05E3FF, "MR"),  # Mauritania
    (0x060000, 0x0603FF, "MU"),  # Mauritius
    (0x062000, 0x062FFF, "NE"),  # Niger
    (0x064000, 0x064FFF, "NG"),  # Nigeria
    (0x068000, 0x068FFF, "UG"),  # Uganda
    (0x06A000, 0x06A3FF, "QA"),  # Qatar
    (0x06C000, 0x06CFFF, "CF"),  # Central African Republic
    (0x06E000, 0x06EFFF, "RW"),  # Rwanda
    (0x070000, 0x070FFF, "SN"),  # Senegal
    (0x074000, 0x0743FF, "SC"),  # Seychelles
    (0x076000, 0x0763FF, "SL"),  # Sierra Leone
    (0x078000, 0x078FFF, "SO"),  # Somalia
    (0x07A000, 0x07A3FF, "SZ"),  # Eswatini
    (0x07C000, 0x07CFFF, "SD"),  # Sudan
    (0x080000, 0x080FFF, "TZ"),  # United Republic of Tanzania
    (0x084000, 0x084FFF, "TD"),  # Chad
    (0x088000, 0x088FFF, "TG"),  # Togo
    (0x08A000, 0x08AFFF, "ZM"),  # Zambia
    (0x08C000, 0x08CFFF, "CD"),  # Democratic Republic of the Congo
    (0x090000, 0x090FFF, "AO"),  # Angola
    (0x094000, 0x0943FF, "BJ"),  # Benin
    (0x096000, 0x0963FF, "CV"),  # Cabo Verde
    (0x098000, 0x0983FF, "DJ"),  # Djibouti
    (0x09A000, 0x09AFFF, "GM"),  # Gambia
    (0x09C000, 0x09CFFF, "BF"),  # Burkina Faso
    (0x09E000, 0x09E3FF, "ST"),  # Sao Tome and Principe
    (0x0A0000, 0x0A7FFF, "DZ"),  # Algeria
    (0x0A8000, 0x0A8FFF, "BS"),  # Bahamas
    (0x0AA000, 0x0AA3FF, "BB"),  # Barbados
    (0x0AB000, 0x0AB3FF, "BZ"),  # Belize
    (0x0AC000, 0x0ACFFF, "CO"),  # Colombia
    (0x0AE000, 0x0AEFFF, "CR"),  # Costa Rica
    (0x0B0000, 0x0B0FFF, "CU"),  # Cuba
    (0x0B2000, 0x0B2FFF, "SV"),  # El Salvador
    (0x0B4000, 0x0B4FFF, "GT"),  # Guatemala
    (0x0B6000, 0x0B6FFF, "GY"),  # Guyana
    (0x0B8000, 0x0B8FFF, "HT"),  # Haiti
    (0x0BA000, 0x0BAFFF, "HN"),  # Honduras
    (0x0BC000, 0x0BC3FF, "VC"),  # Saint Vincent and the Grenadines
    (0x0BE000, 0x0BEFFF, "JM"),  # Jamaica
    (0x0C0000, 0x0C0FFF, "NI"),  # Nicaragua
    (0x0C2000, 0x0C2FFF, "PA"),  # Panama
    (0x0C4000, 0x0C4FFF, "DO"),  # Dominican Republic
    (0x0C6000, 0x0C6FFF, "TT"),  # Trinidad and Tobago
    (0x0C8000, 0x0C8FFF, "SR"),  # Suriname
    (0x0CA000, 0x0CA3FF, "AG"),  # Antigua and Barbuda
    (0x0CC000, 0x0CC3FF, "GD"),  # Grenada
    (0x0D0000, 0x0D7FFF, "MX"),  # Mexico
    (0x0D8000, 0x0DFFFF, "VE"),  # Venezuela
    (0x100000, 0x1FFFFF, "RU"),  # Russian Federation
    (0x201000, 0x2013FF, "NA"),  # Namibia
    (0x202000, 0x2023FF, "ER"),  # Eritrea
    (0x300000, 0x33FFFF, "IT"),  # Italy
    (0x340000, 0x37FFFF, "ES"),  # Spain
    (0x380000, 0x3BFFFF, "FR"),  # France
    (0x3C0000, 0x3FFFFF, "DE"),  # Germany
    (0x400000, 0x43FFFF, "GB"),  # United Kingdom
    (0x440000, 0x447FFF, "AT"),  # Austria
    (0x448000, 0x44FFFF, "BE"),  # Belgium
    (0x450000, 0x457FFF, "BG"),  # Bulgaria
    (0x458000, 0x45FFFF, "DK"),  # Denmark
    (0x460000, 0x467FFF, "FI"),  # Finland
    (0x468000, 0x46FFFF, "GR"),  # Greece
    (0x470000, 0x477FFF, "HU"),  # Hungary
    (0x478000, 0x47FFFF, "NO"),  # Norway
    (0x480000, 0x487FFF, "NL"),  # Netherlands
    (0x488000, 0x48FFFF, "PL"),  # Poland
    (0x490000, 0x497FFF, "PT"),  # Portugal
    (0x498000, 0x49FFFF, "CZ"),  # Czechia
    (0x4A0000, 0x4A7FFF, "RO"),  # Romania
    (0x4A8000, 0x4AFFFF, "SE"),  # Sweden
    (0x4B0000, 0x4B7FFF, "CH"),  # Switzerland
    (0x4B8000, 0x4BFFFF, "TR"),  # Turkiye
    (0x4C0000, 0x4C7FFF, "RS"),  # Serbia (the former Yugoslavia's block)
    (0x4C8000, 0x4C83FF, "CY"),  # Cyprus
    (0x4CA000, 0x4CAFFF, "IE"),  # Ireland
    (0x4CC000, 0x4CCFFF, "IS"),  # Iceland
    (0x4D0000, 0x4D03FF, "LU"),  # Luxembourg
    (0x4D2000, 0x4D23FF, "MT"),  # Malta
    (0x4D4000, 0x4D43FF, "MC"),  # Monaco
    (0x500000, 0x5003FF, "SM"),  # San Marino
    (0x501000, 0x5013FF, "AL"),  # Albania
    (0x501C00, 0x501FFF, "HR"),  # Croatia
    (0x502C00, 0x502FFF, "LV"),  # Latvia
    (0x503C00, 0x503FFF, "LT"),  # Lithuania
    (0x504C00, 0x504FFF, "MD"),  # Republic of Moldova
    (0x505C00, 0x505FFF, "SK"),  # Slovakia
    (0x506C00, 0x506FFF, "SI"),  # Slovenia
    (0x507C00, 0x507FFF, "UZ"),  # Uzbekistan
    (0x508000, 0x50FFFF, "UA"),  # Ukraine
    (0x510000, 0x5103FF, "BY"),  # Belarus
    (0x511000, 0x5113FF, "EE"),  # Estonia
    (0x512000, 0x5123FF, "MK"),  # North Macedonia
    (0x513000, 0x5133FF, "BA"),  # Bosnia and Herzegovina
    (0x514000, 0x5143FF, "GE"),  # Georgia
    (0x515000, 0x5153FF, "TJ"),  # Tajikistan
    (0x516000, 0x5163FF, "ME"),  # Montenegro
    (0x600000, 0x6003FF, "AM"),  # Armenia
    (0x600800, 0x600BFF, "AZ"),  # Azerbaijan
    (0x601000, 0x6013FF, "KG"),  # Kyrgyzstan
    (0x601800, 0x601BFF, "TM"),  # Turkmenistan
    (0x680000, 0x6803FF, "BT"),  # Bhutan
    (0x681000, 0x6813FF, "FM"),  # Micronesia (Federated States of)
    (0x682000, 0x6823FF, "MN"),  # Mongolia
    (0x683000, 0x6833FF, "KZ"),  # Kazakhstan
    (0x684000, 0x6843FF, "PW"),  # Palau
    (0x700000, 0x700FFF, "AF"),  # Afghanistan
    (0x702000, 0x702FFF, "BD"),  # Bangladesh
    (0x704000, 0x704FFF, "MM"),  # Myanmar
    (0x706000, 0x706FFF, "KW"),  # Kuwait
    (0x708000, 0x708FFF, "LA"),  # Lao People's Democratic Republic
    (0x70A000, 0x70AFFF, "NP"),  # Nepal
    (0x70C000, 0x70C3FF, "OM"),  # Oman
    (0x70E000, 0x70EFFF, "KH"),  # Cambodia
    (0x710000, 0x717FFF, "SA"),  # Saudi Arabia
    (0x718000, 0x71FFFF, "KR"),  # Republic of Korea
    (0x720000, 0x727FFF, "KP"),  # Democratic People's Republic of Korea
    (0x728000, 0x72FFFF, "IQ"),  # Iraq
    (0x730000, 0x737FFF, "IR"),  # Iran (Islamic Republic of)
    (0x738000, 0x73FFFF, "IL"),  # Israel
    (0x740000, 0x747FFF, "JO"),  # Jordan
    (0x748000, 0x74FFFF, "LB"),  # Lebanon
    (0x750000, 0x757FFF, "MY"),  # Malaysia
    (0x758000, 0x75FFFF, "PH"),  # Philippines
    (0x760000, 0x767FFF, "PK"),  # Pakistan
    (0x768000, 0x76FFFF, "SG"),  # Singapore
    (0x770000, 0x777FFF, "LK"),  # Sri Lanka
    (0x778000, 0x77FFFF, "SY"),  # Syrian Arab Republic
    (0x780000, 0x7BFFFF, "CN"),  # China
    (0x7C0000, 0x7FFFFF, "AU"),  # Australia
    (0x800000, 0x83FFFF, "IN"),  # India
    (0x840000, 0x87FFFF, "JP"),  # Japan
    (0x880000, 0x887FFF, "TH"),  # Thailand
    (0x888000, 0x88FFFF, "VN"),  # Viet Nam
    (0x890000, 0x890FFF, "YE"),  # Yemen
    (0x894000, 0x894FFF, "BH"),  # Bahrain
    (0x895000, 0x8953FF, "BN"),  # Brunei Darussalam
    (0x896000, 0x896FFF, "AE"),  # United Arab Emirates
    (0x897000, 0x8973FF, "SB"),  # Solomon Islands
    (0x898000, 0x898FFF, "PG"),  # Papua New Guinea
    # Not in Table 9-1 (ICAO lists no entry for it), but the block aircraft registered in Taiwan
    # (B-1xxxx) have used since ICAO left it unallocated; listed so a rule can name TW.
    (0x899000, 0x8993FF, "TW"),  # Taiwan (Province of China)
    (0x8A0000, 0x8A7FFF, "ID"),  # Indonesia
    (0x900000, 0x9003FF, "MH"),  # Marshall Islands
    (0x901000, 0x9013FF, "CK"),  # Cook Islands
    (0x902000, 0x9023FF, "WS"),  # Samoa
    (0xA00000, 0xAFFFFF, "US"),  # United States
    (0xC00000, 0xC3FFFF, "CA"),  # Canada
    (0xC80000, 0xC87FFF, "NZ"),  # New Zealand
    (0xC88000, 0xC88FFF, "FJ"),  # Fiji
    (0xC8A000, 0xC8A3FF, "NR"),  # Nauru
    (0xC8C000, 0xC8C3FF, "LC"),  # Saint Lucia
    (0xC8D000, 0xC8D3FF, "TO"),  # Tonga
    (0xC8E000, 0xC8E3FF, "KI"),  # Kiribati
    (0xC90000, 0xC903FF, "VU"),  # Vanuatu
    (0xE00000, 0xE3FFFF, "AR"),  # Argentina
    (0xE40000, 0xE7FFFF, "BR"),  # Brazil
    (0xE80000, 0xE80FFF, "CL"),  # Chile
    (0xE84000, 0xE84FFF, "EC"),  # Ecuador
    (0xE88000, 0xE88FFF, "PY"),  # Paraguay
    (0xE8C000, 0xE8CFFF, "PE"),  # Peru
    (0xE90000, 0xE90FFF, "UY"),  # Uruguay
    (0xE94000, 0xE94FFF, "BO"),  # Bolivia (Plurinational State of)
)

# ITU-R M.585 / ITU MID table: MID -> the countries (ISO 3166-1 alpha-2) it belongs to.
_MID_LIST: tuple[tuple[tuple[int, ...], str], ...] = (
    # Europe (2xx)
    ((201,), "AL"),  # Albania
    ((202,), "AD"),  # Andorra
    ((203,), "AT"),  # Austria
    ((204, 255, 263), "PT"),  # Portugal (204 Azores, 255 Madeira)
    ((205,), "BE"),  # Belgium
    ((206,), "BY"),  # Belarus
    ((207,), "BG"),  # Bulgaria
    ((208,), "VA"),  # Vatican City State
    ((209, 210, 212), "CY"),  # Cyprus
    ((211, 218), "DE"),  # Germany
    ((213,), "GE"),  # Georgia
    ((214,), "MD"),  # Moldova
    ((215, 229, 248, 249, 256), "MT"),  # Malta
    ((216,), "AM"),  # Armenia
    ((219, 220), "DK"),  # Denmark
    ((224, 225), "ES"),  # Spain
    ((226, 227, 228), "FR"),  # France
    ((230,), "FI"),  # Finland
    ((231,), "FO"),  # Faroe Islands
    ((232, 233, 234, 235), "GB"),  # United Kingdom
    ((236,), "GI"),  # Gibraltar
    ((237, 239, 240, 241), "GR"),  # Greece
    ((238,), "HR"),  # Croatia
    ((242,), "MA"),  # Morocco
    ((243,), "HU"),  # Hungary
    ((244, 245, 246), "NL"),  # Netherlands
    ((247,), "IT"),  # Italy
    ((250,), "IE"),  # Ireland
    ((251,), "IS"),  # Iceland
    ((252,), "LI"),  # Liechtenstein
    ((253,), "LU"),  # Luxembourg
    ((254,), "MC"),  # Monaco
    ((257, 258, 259), "NO"),  # Norway
    ((261,), "PL"),  # Poland
    ((262,), "ME"),  # Montenegro
    ((264,), "RO"),  # Romania
    ((265, 266), "SE"),  # Sweden
    ((267,), "SK"),  # Slovakia
    ((268,), "SM"),  # San Marino
    ((269,), "CH"),  # Switzerland
    ((270,), "CZ"),  # Czechia
    ((271,), "TR"),  # Turkiye
    ((272,), "UA"),  # Ukraine
    ((273,), "RU"),  # Russian Federation
    ((274,), "MK"),  # North Macedonia
    ((275,), "LV"),  # Latvia
    ((276,), "EE"),  # Estonia
    ((277,), "LT"),  # Lithuania
    ((278,), "SI"),  # Slovenia
    ((279,), "RS"),  # Serbia
    # North and Central America, Caribbean (3xx)
    ((301,), "AI"),  # Anguilla
    ((303, 338, 366, 367, 368, 369), "US"),  # United States (303 Alaska)
    ((304, 305), "AG"),  # Antigua and Barbuda
    ((306,), "BQ"),  # Bonaire, Sint Eustatius and Saba
    ((306,), "CW"),  # Curacao
    ((306,), "SX"),  # Sint Maarten (Dutch part)
    ((307,), "AW"),  # Aruba
    ((308, 309, 311), "BS"),  # Bahamas
    ((310,), "BM"),  # Bermuda
    ((312,), "BZ"),  # Belize
    ((314,), "BB"),  # Barbados
    ((316,), "CA"),  # Canada
    ((319,), "KY"),  # Cayman Islands
    ((321,), "CR"),  # Costa Rica
    ((323,), "CU"),  # Cuba
    ((325,), "DM"),  # Dominica
    ((327,), "DO"),  # Dominican Republic
    ((329,), "GP"),  # Guadeloupe
    ((330,), "GD"),  # Grenada
    ((331,), "GL"),  # Greenland
    ((332,), "GT"),  # Guatemala
    ((334,), "HN"),  # Honduras
    ((336,), "HT"),  # Haiti
    ((339,), "JM"),  # Jamaica
    ((341,), "KN"),  # Saint Kitts and Nevis
    ((343,), "LC"),  # Saint Lucia
    ((345,), "MX"),  # Mexico
    ((347,), "MQ"),  # Martinique
    ((348,), "MS"),  # Montserrat
    ((350,), "NI"),  # Nicaragua
    ((351, 352, 353, 354, 355, 356, 357, 370, 371, 372, 373, 374), "PA"),  # Panama
    ((358,), "PR"),  # Puerto Rico
    ((359,), "SV"),  # El Salvador
    ((361,), "PM"),  # Saint Pierre and Miquelon
    ((362,), "TT"),  # Trinidad and Tobago
    ((364,), "TC"),  # Turks and Caicos Islands
    ((375, 376, 377), "VC"),  # Saint Vincent and the Grenadines
    ((378,), "VG"),  # British Virgin Islands
    ((379,), "VI"),  # United States Virgin Islands
    # Asia (4xx)
    ((401,), "AF"),  # Afghanistan
    ((403,), "SA"),  # Saudi Arabia
    ((405,), "BD"),  # Bangladesh
    ((408,), "BH"),  # Bahrain
    ((410,), "BT"),  # Bhutan
    ((412, 413, 414), "CN"),  # China
    ((416,), "TW"),  # Taiwan (Province of China)
    ((417,), "LK"),  # Sri Lanka
    ((419,), "IN"),  # India
    ((422,), "IR"),  # Iran
    ((423,), "AZ"),  # Azerbaijan
    ((425,), "IQ"),  # Iraq
    ((428,), "IL"),  # Israel
    ((431, 432), "JP"),  # Japan
    ((434,), "TM"),  # Turkmenistan
    ((436,), "KZ"),  # Kazakhstan
    ((437,), "UZ"),  # Uzbekistan
    ((438,), "JO"),  # Jordan
    ((440, 441), "KR"),  # Republic of Korea
    ((443,), "PS"),  # State of Palestine
    ((445,), "KP"),  # Democratic People's Republic of Korea
    ((447,), "KW"),  # Kuwait
    ((450,), "LB"),  # Lebanon
    ((451,), "KG"),  # Kyrgyzstan
    ((453,), "MO"),  # Macao
    ((455,), "MV"),  # Maldives
    ((457,), "MN"),  # Mongolia
    ((459,), "NP"),  # Nepal
    ((461,), "OM"),  # Oman
    ((463,), "PK"),  # Pakistan
    ((466,), "QA"),  # Qatar
    ((468,), "SY"),  # Syrian Arab Republic
    ((470, 471), "AE"),  # United Arab Emirates
    ((472,), "TJ"),  # Tajikistan
    ((473, 475), "YE"),  # Yemen
    ((477,), "HK"),  # Hong Kong
    ((478,), "BA"),  # Bosnia and Herzegovina
    # Oceania (5xx)
    # French Southern Territories (501 Adelie Land, 607 St Paul and Amsterdam, 618 Crozet,
    # 635 Kerguelen)
    ((501, 607, 618, 635), "TF"),
    ((503,), "AU"),  # Australia
    ((506,), "MM"),  # Myanmar
    ((508,), "BN"),  # Brunei Darussalam
    ((510,), "FM"),  # Micronesia
    ((511,), "PW"),  # Palau
    ((512,), "NZ"),  # New Zealand
    ((514, 515), "KH"),  # Cambodia
    ((516,), "CX"),  # Christmas Island
    ((518,), "CK"),  # Cook Islands
    ((520,), "FJ"),  # Fiji
    ((523,), "CC"),  # Cocos (Keeling) Islands
    ((525,), "ID"),  # Indonesia
    ((529,), "KI"),  # Kiribati
    ((531,), "LA"),  # Lao People's Democratic Republic
    ((533,), "MY"),  # Malaysia
    ((536,), "MP"),  # Northern Mariana Islands
    ((538,), "MH"),  # Marshall Islands
    ((540,), "NC"),  # New Caledonia
    ((542,), "NU"),  # Niue
    ((544,), "NR"),  # Nauru
    ((546,), "PF"),  # French Polynesia
    ((548,), "PH"),  # Philippines
    ((550,), "TL"),  # Timor-Leste
    ((553,), "PG"),  # Papua New Guinea
    ((555,), "PN"),  # Pitcairn Island
    ((557,), "SB"),  # Solomon Islands
    ((559,), "AS"),  # American Samoa
    ((561,), "WS"),  # Samoa
    ((563, 564, 565, 566), "SG"),  # Singapore
    ((567,), "TH"),  # Thailand
    ((570,), "TO"),  # Tonga
    ((572,), "TV"),  # Tuvalu
    ((574,), "VN"),  # Viet Nam
    ((576, 577), "VU"),  # Vanuatu
    ((578,), "WF"),  # Wallis and Futuna Islands
    # Africa (6xx)
    ((601,), "ZA"),  # South Africa
    ((603,), "AO"),  # Angola
    ((605,), "DZ"),  # Algeria
    ((608, 665), "SH"),  # Saint Helena, Ascension and Tristan da Cunha (608 Ascension)
    ((609,), "BI"),  # Burundi
    ((610,), "BJ"),  # Benin
    ((611,), "BW"),  # Botswana
    ((612,), "CF"),  # Central African Republic
    ((613,), "CM"),  # Cameroon
    ((615,), "CG"),  # Congo
    ((616, 620), "KM"),  # Comoros
    ((617,), "CV"),  # Cabo Verde
    ((619,), "CI"),  # Cote d'Ivoire
    ((621,), "DJ"),  # Djibouti
    ((622,), "EG"),  # Egypt
    ((624,), "ET"),  # Ethiopia
    ((625,), "ER"),  # Eritrea
    ((626,), "GA"),  # Gabon
    ((627,), "GH"),  # Ghana
    ((629,), "GM"),  # Gambia
    ((630,), "GW"),  # Guinea-Bissau
    ((631,), "GQ"),  # Equatorial Guinea
    ((632,), "GN"),  # Guinea
    ((633,), "BF"),  # Burkina Faso
    ((634,), "KE"),  # Kenya
    ((636, 637), "LR"),  # Liberia
    ((638,), "SS"),  # South Sudan
    ((642,), "LY"),  # Libya
    ((644,), "LS"),  # Lesotho
    ((645,), "MU"),  # Mauritius
    ((647,), "MG"),  # Madagascar
    ((649,), "ML"),  # Mali
    ((650,), "MZ"),  # Mozambique
    ((654,), "MR"),  # Mauritania
    ((655,), "MW"),  # Malawi
    ((656,), "NE"),  # Niger
    ((657,), "NG"),  # Nigeria
    ((659,), "NA"),  # Namibia
    ((660,), "RE"),  # Reunion
    ((661,), "RW"),  # Rwanda
    ((662,), "SD"),  # Sudan
    ((663,), "SN"),  # Senegal
    ((664,), "SC"),  # Seychelles
    ((666,), "SO"),  # Somalia
    ((667,), "SL"),  # Sierra Leone
    ((668,), "ST"),  # Sao Tome and Principe
    ((669,), "SZ"),  # Eswatini
    ((670,), "TD"),  # Chad
    ((671,), "TG"),  # Togo
    ((672,), "TN"),  # Tunisia
    ((674, 677), "TZ"),  # United Republic of Tanzania
    ((675,), "UG"),  # Uganda
    ((676,), "CD"),  # Democratic Republic of the Congo
    ((678,), "ZM"),  # Zambia
    ((679,), "ZW"),  # Zimbabwe
    # South America (7xx)
    ((701,), "AR"),  # Argentina
    ((710,), "BR"),  # Brazil
    ((720,), "BO"),  # Bolivia
    ((725,), "CL"),  # Chile
    ((730,), "CO"),  # Colombia
    ((735,), "EC"),  # Ecuador
    ((740,), "FK"),  # Falkland Islands (Malvinas)
    ((745,), "GF"),  # French Guiana
    ((750,), "GY"),  # Guyana
    ((755,), "PY"),  # Paraguay
    ((760,), "PE"),  # Peru
    ((765,), "SR"),  # Suriname
    ((770,), "UY"),  # Uruguay
    ((775,), "VE"),  # Venezuela
)


def _mids() -> dict[int, frozenset[str]]:
    table: dict[int, set[str]] = {}
    for mids, country in _MID_LIST:
        for mid in mids:
            table.setdefault(mid, set()).add(country)
    return {mid: frozenset(countries) for mid, countries in sorted(table.items())}


# MID -> the countries it belongs to (one, except 306).
MIDS: Mapping[int, frozenset[str]] = _mids()

# Every country code a rule may name: those with an ICAO block or a MID.
COUNTRIES: frozenset[str] = frozenset(c for _, _, c in ICAO_BLOCKS) | frozenset(
    c for _, c in _MID_LIST
)

_STARTS = tuple(first for first, _, _ in ICAO_BLOCKS)


def icao_country(address: int) -> str | None:
    """The State whose block holds the 24-bit ICAO address, or None (unallocated, or ICAO's)."""
    i = bisect_right(_STARTS, address) - 1
    if i < 0:
        return None
    first, last, country = ICAO_BLOCKS[i]
    return country if first <= address <= last else None


def mid_countries(mid: int) -> frozenset[str]:
    """The countries a MID belongs to (empty when the MID is not allocated)."""
    return MIDS.get(mid, frozenset())
