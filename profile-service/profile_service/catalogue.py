"""The standard entity catalogue every organization starts with (Dataverse-like account, contact,
opportunity, task, product, territory); none is enabled for offline until an admin says so."""

from __future__ import annotations

from typing import Any


def _s(required: bool = False, max_length: int = 200) -> dict[str, Any]:
    return {"type": "string", "required": required, "max_length": max_length}


def _t(t: str, required: bool = False) -> dict[str, Any]:
    return {"type": t, "required": required}


def _lookup(target: str) -> dict[str, Any]:
    return {"type": "lookup", "required": False, "target": target}


STANDARD_ENTITIES: list[dict[str, Any]] = [
    {
        "logical_name": "account",
        "display_name": "Account",
        "ownership": "user_or_team",
        "attributes": {
            "name": _s(True, 160),
            "accountnumber": _s(max_length=20),
            "revenue": _t("decimal"),
            "numberofemployees": _t("int"),
            "primarycontactid": _lookup("contact"),
            "parentaccountid": _lookup("account"),
            "telephone1": _s(max_length=50),
            "emailaddress1": _s(max_length=100),
            "address1_city": _s(max_length=80),
            "industrycode": _t("choice"),
            "creditonhold": _t("bool"),
            "statecode": _t("choice"),
        },
    },
    {
        "logical_name": "contact",
        "display_name": "Contact",
        "ownership": "user_or_team",
        "attributes": {
            "firstname": _s(max_length=50),
            "lastname": _s(True, 50),
            "fullname": _s(max_length=160),
            "emailaddress1": _s(max_length=100),
            "telephone1": _s(max_length=50),
            "jobtitle": _s(max_length=100),
            "parentcustomerid": _lookup("account"),
            "birthdate": _t("datetime"),
            "preferredcontactmethodcode": _t("choice"),
            "statecode": _t("choice"),
        },
    },
    {
        "logical_name": "opportunity",
        "display_name": "Opportunity",
        "ownership": "user_or_team",
        "attributes": {
            "name": _s(True, 300),
            "parentaccountid": _lookup("account"),
            "parentcontactid": _lookup("contact"),
            "estimatedvalue": _t("decimal"),
            "estimatedclosedate": _t("datetime"),
            "closeprobability": _t("int"),
            "description": _s(max_length=2000),
            "statecode": _t("choice"),
        },
    },
    {
        "logical_name": "task",
        "display_name": "Task",
        "ownership": "user_or_team",
        "attributes": {
            "subject": _s(True, 200),
            "description": _s(max_length=2000),
            "regardingobjectid": _lookup("account"),
            "scheduledend": _t("datetime"),
            "actualdurationminutes": _t("int"),
            "prioritycode": _t("choice"),
            "statecode": _t("choice"),
        },
    },
    {
        "logical_name": "product",
        "display_name": "Product",
        "ownership": "organization",
        "attributes": {
            "name": _s(True, 100),
            "productnumber": _s(True, 100),
            "price": _t("decimal"),
            "description": _s(max_length=2000),
            "quantityonhand": _t("decimal"),
            "statecode": _t("choice"),
        },
    },
    {
        "logical_name": "territory",
        "display_name": "Territory",
        "ownership": "business",
        "attributes": {
            "name": _s(True, 200),
            "description": _s(max_length=2000),
            "managerid": _lookup("user"),
        },
    },
]
