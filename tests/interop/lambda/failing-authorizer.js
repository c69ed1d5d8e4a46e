// A Lambda authorizer that fails (an unhandled error, as a bug or a dependency outage would
// make it): Lambda answers the Invoke call with X-Amz-Function-Error and the error object, and
// the gateway must refuse the request, never allow it.
exports.handler = async () => {
  throw new Error('the tenant database is unreachable');
};
