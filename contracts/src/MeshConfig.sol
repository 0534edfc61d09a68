// SPDX-License-Identifier: MIT
pragma solidity ^0.8.27;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title Mesh-wide parameters, changed only by the DAO through the timelock.
contract MeshConfig is Ownable {
    mapping(string => string) public parameters;

    event ParameterSet(string key, string value);

    constructor(address timelock) Ownable(timelock) {}

    function setParameter(string calldata key, string calldata value) external onlyOwner {
        parameters[key] = value;
        emit ParameterSet(key, value);
    }
}
