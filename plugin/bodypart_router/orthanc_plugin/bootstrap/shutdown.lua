-- bodypart-router: let the router stop its threads while Orthanc is still fully running.
--
-- Orthanc runs the Lua function Finalize() just before it tells plugins that it stops
-- (ORTHANC_STOPPED). At that later point, with Orthanc 1.10's Python plugin, a router
-- thread that is asking about a forwarding job could wait forever and hang the shutdown.
-- Calling the router from here stops its threads first, and lets it see the forwards that
-- are still running through to their end. List this file in "LuaScripts".
-- The route only obeys a call that carries no HTTP headers and the token the router put in
-- Orthanc's environment at start-up, so no HTTP client can stop the router.
-- (If you have your own Lua scripts, make the same call from your Finalize().)

function Finalize()
  local token = os.getenv('BODYPART_ROUTER_STOP_TOKEN') or ''
  RestApiPost('/bodypart-router/lifecycle/prepare-stop', '{"Token": "' .. token .. '"}')
end
