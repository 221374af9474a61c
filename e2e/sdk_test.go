package e2e

import (
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

func azsecretsSet(value, contentType string) azsecrets.SetSecretParameters {
	p := azsecrets.SetSecretParameters{Value: &value}
	if contentType != "" {
		p.ContentType = &contentType
	}
	return p
}
