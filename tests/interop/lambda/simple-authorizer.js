// A Lambda authorizer for an HTTP API with simple responses (payload format 2.0), written as
// AWS documents it ("Lambda authorizer response format", enableSimpleResponses): allowed when
// the Authorization header is the secret token; the context reaches the integration.
exports.handler = async (event) => {
  let response = {
    isAuthorized: false,
    context: {
      stringKey: 'value',
      numberKey: 1,
      booleanKey: true,
    },
  };

  if (event.headers.authorization === 'secretToken') {
    console.log('allowed');
    response = {
      isAuthorized: true,
      context: {
        stringKey: 'value',
        numberKey: 1,
        booleanKey: true,
        tenantId: event.pathParameters && event.pathParameters.tenant,
      },
    };
  }

  return response;
};
