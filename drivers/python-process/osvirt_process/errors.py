"""Errors that cross the wire with a gRPC code, as the driver contract
(proto/osvirt/driver/v1/driver.proto) asks: NOT_FOUND for an unknown id,
FAILED_PRECONDITION for a wrong state or a missing host feature (the
message names it), INVALID_ARGUMENT for a spec this driver cannot run."""

import grpc


class DriverError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(cid):
    return DriverError(grpc.StatusCode.NOT_FOUND, 'container "%s" not found' % cid)


def wrong_state(cid, state, wanted):
    return DriverError(grpc.StatusCode.FAILED_PRECONDITION, 'container "%s" is %s; this operation needs it %s' % (cid, state, wanted))


def invalid(field, why):
    return DriverError(grpc.StatusCode.INVALID_ARGUMENT, "%s: %s" % (field, why))


def missing_feature(feature, why):
    return DriverError(grpc.StatusCode.FAILED_PRECONDITION, "%s is not available: %s" % (feature, why))
