// A Lambda authorizer that answers with an IAM policy, written as AWS documents the
// REQUEST-authorizer example (callback style, generatePolicy), with payload format 1.0 (the
// request's ARN is event.methodArn). Allows when the headerauth1 header and the QueryString1
// query parameter hold the expected values; the policy covers every method below the API's
// stage, except DELETE.
exports.handler = function (event, context, callback) {
  const headers = event.headers;
  const queryStringParameters = event.queryStringParameters || {};

  // Parse the input for the parameter values
  const tmp = event.methodArn.split(':');
  const apiGatewayArnTmp = tmp[5].split('/');
  const awsAccountId = tmp[4];
  const region = tmp[3];
  const restApiId = apiGatewayArnTmp[0];
  const stage = apiGatewayArnTmp[1];
  const resource = `arn:aws:execute-api:${region}:${awsAccountId}:${restApiId}/${stage}`;

  if (headers.headerauth1 === 'headerValue1' && queryStringParameters.QueryString1 === 'queryValue1') {
    const policy = generatePolicy('me', 'Allow', `${resource}/*/*`);
    policy.policyDocument.Statement.push(generateStatement('Deny', `${resource}/DELETE/*`));
    callback(null, policy);
  } else {
    callback(null, generatePolicy('me', 'Deny', `${resource}/*/*`));
  }
};

// Helper function to generate an IAM policy
const generateStatement = function (effect, resource) {
  return {
    Action: 'execute-api:Invoke',
    Effect: effect,
    Resource: resource,
  };
};

const generatePolicy = function (principalId, effect, resource) {
  const authResponse = {};
  authResponse.principalId = principalId;
  if (effect && resource) {
    const policyDocument = {};
    policyDocument.Version = '2012-10-17';
    policyDocument.Statement = [generateStatement(effect, resource)];
    authResponse.policyDocument = policyDocument;
  }
  // Optional output with custom properties of the String, Number or Boolean type.
  authResponse.context = {
    stringKey: 'stringval',
    numberKey: 123,
    booleanKey: true,
  };
  return authResponse;
};
