#!/bin/sh
# azd postdeploy hook: the second pass of the first `azd up`. Event Grid validates an AzureFunction destination against
# the deployed code, so the registries' subscriptions can only be created once on_image_pushed exists. The first
# provision runs with subscribeToRegistries=false; after the code is deployed this hook waits for the function, sets
# AUTOPILOT_EVENTS_READY=true in the azd environment and provisions again (an incremental deployment that adds only the
# subscriptions). Every later `azd up` / `azd provision` includes them straight away, and this hook does nothing.
set -eu

poll_seconds="${AUTOPILOT_HOOK_POLL_SECONDS:-10}"
attempts="${AUTOPILOT_HOOK_ATTEMPTS:-30}"

if [ "$(azd env get-value AUTOPILOT_EVENTS_READY 2>/dev/null || true)" = "true" ]; then
  echo "postdeploy: Event Grid subscriptions are part of the deployment already; nothing to do"
  exit 0
fi

app="${AZURE_FUNCTION_APP_NAME:?AZURE_FUNCTION_APP_NAME is not set: run azd provision first}"
group="${AZURE_RESOURCE_GROUP:?AZURE_RESOURCE_GROUP is not set: run azd provision first}"
echo "postdeploy: waiting for $app to list on_image_pushed (the Event Grid destination)"
i=0
until az functionapp function show --resource-group "$group" --name "$app" --function-name on_image_pushed --output none 2>/dev/null; do
  i=$((i + 1))
  if [ "$i" -ge "$attempts" ]; then
    echo "postdeploy: on_image_pushed did not appear in $app; check the deployment (az functionapp log deployment list) and run azd deploy again" >&2
    exit 1
  fi
  sleep "$poll_seconds"
done

azd env set AUTOPILOT_EVENTS_READY true
echo "postdeploy: creating the registries' Event Grid subscriptions (azd provision)"
if ! azd provision --no-prompt; then
  azd env set AUTOPILOT_EVENTS_READY false  # so the next azd up tries again
  echo "postdeploy: provisioning the Event Grid subscriptions failed; fix the error above and run azd up again" >&2
  exit 1
fi
