// SPDX-License-Identifier: MIT
pragma solidity ^0.8.27;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title Mesh-wide parameters, changed only by the DAO through the timelock.
contract MeshConfig is Ownable {
    mapping(string => string) public parameters;

    event ParameterSet(string key, string value);

    /// @param initialKeys parameters in force from deployment (e.g. "policy.sha256", the hash of the network
    ///        policy the worker enforces); later changes go through the DAO like any other.
    constructor(address timelock, string[] memory initialKeys, string[] memory initialValues) Ownable(timelock) {
        require(initialKeys.length == initialValues.length, "MeshConfig: keys and values differ in length");
        for (uint256 i = 0; i < initialKeys.length; i++) {
            parameters[initialKeys[i]] = initialValues[i];
            emit ParameterSet(initialKeys[i], initialValues[i]);
        }
    }

    function setParameter(string calldata key, string calldata value) external onlyOwner {
        parameters[key] = value;
        emit ParameterSet(key, value);
    }
}
