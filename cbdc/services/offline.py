"""Offline payments, the ledger's side (issue 4): one import for the services of
:mod:`cbdc.services.offline_devices` (provisioning, loads, unloads, revocation lists, fraud
cases), :mod:`cbdc.services.offline_uploads` (uploads, settlement, sync receipts) and
:mod:`cbdc.services.offline_report` (reconciliation). The device side is :mod:`cbdc.offline`.
"""

from cbdc.services.offline_devices import (
    DeviceLoad,
    DeviceRequest,
    ProvisionedDevice,
    UnloadResult,
    fraud_cases,
    load_device,
    load_devices,
    provision_device,
    provision_devices,
    revocation_list,
    unload_device,
)
from cbdc.services.offline_keys import operator_authority, root_authority, root_public_key
from cbdc.services.offline_report import OfflineReport, offline_report
from cbdc.services.offline_settlement import FraudCaseView
from cbdc.services.offline_uploads import (
    Upload,
    UploadOutcome,
    UploadReport,
    upload_offline_batches,
    upload_offline_payments,
)

__all__ = [
    "DeviceLoad",
    "DeviceRequest",
    "FraudCaseView",
    "OfflineReport",
    "ProvisionedDevice",
    "UnloadResult",
    "Upload",
    "UploadOutcome",
    "UploadReport",
    "fraud_cases",
    "load_device",
    "load_devices",
    "offline_report",
    "operator_authority",
    "provision_device",
    "provision_devices",
    "revocation_list",
    "root_authority",
    "root_public_key",
    "unload_device",
    "upload_offline_batches",
    "upload_offline_payments",
]
